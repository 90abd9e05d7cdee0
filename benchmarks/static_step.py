"""The decode step alone: transformers' forward, the static step (eager) and the compiled step, on the embedded 270M.

    python -m benchmarks.static_step [--rounds 4] [--tokens 24] [--threads 1] [--out docs/bench/static_step.json]

Per token, in interleaved rounds: the process's CPU time (time.process_time: the work done, which a machine shared
with other jobs inflates far less than wall time) and wall time; ATen ops per token from torch.profiler (every op it
records, nested ones included, as issue 22 counted); the compiled step's build time (cold, or a warm load from its
on-disk cache) and where the cache lives. Greedy tokens of the static and compiled steps are checked equal.
`benchmarks.user_speed` gives the speed through the app's streaming path beside llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from benchmarks.bench_cpu import BENCH_QUESTION
from benchmarks.machine import machine_info
from medcot.config import EMBEDDED_MODEL, Settings, default_cache_dir
from medcot.load_state import in_passing_thread
from medcot.model.compiled_step import CompiledStep
from medcot.model.loading import load_model
from medcot.model.static_decode import StaticDecoder
from medcot.model.step_rows import rows_of
from medcot.prompt import encode_prompt


def timed(run: Callable[[], Any], tokens: int) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    return {
        "cpu_ms": (time.process_time() - cpu) * 1e3 / tokens,
        "wall_ms": (time.perf_counter() - wall) * 1e3 / tokens,
    }


def greedy_steps(
    decoder: StaticDecoder, step: Callable[..., torch.Tensor], ids: torch.Tensor, tokens: int
) -> list[int]:
    """``tokens`` greedy tokens after the prompt ``ids``, each decoded by ``step`` (the decoder's, or compiled)."""
    with torch.inference_mode():
        cache = decoder.new_cache(len(ids) + tokens + 1)
        logits, position, made = decoder.prefill(ids, cache), torch.tensor([len(ids)]), []
        for _ in range(tokens):
            token = logits.argmax(-1)
            made.append(int(token))
            logits = step(token, position, cache, False)
            position += 1
    return made


def interleaved(paths: dict[str, Callable[[], Any]], rounds: int, tokens: int) -> dict[str, dict[str, Any]]:
    """Each path run ``rounds`` times, in turn (the order reversed every other round): its per-token figures."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
    for index in range(rounds):
        order = list(paths.items())
        for name, run in order if index % 2 == 0 else order[::-1]:
            runs[name].append(timed(run, tokens))
            print(f"round {index + 1}/{rounds} {name}: {runs[name][-1]['cpu_ms']:.1f} ms CPU a token", flush=True)
    return {
        name: {
            "cpu_ms_per_token_median": round(statistics.median(r["cpu_ms"] for r in samples), 2),
            "wall_ms_per_token_median": round(statistics.median(r["wall_ms"] for r in samples), 2),
            "cpu_ms_per_token": [round(r["cpu_ms"], 2) for r in samples],
        }
        for name, samples in runs.items()
    }


def measure(rounds: int, tokens: int, threads: int) -> dict[str, Any]:
    torch.set_num_threads(threads)
    loaded = in_passing_thread(load_model, Settings(base_model=EMBEDDED_MODEL, adapter=None, device="cpu"))
    model = loaded.model
    ids = torch.tensor(encode_prompt(loaded.tokenizer, BENCH_QUESTION).input_ids)
    # The mode's own rows (auto: q8 blocks, read by the compiled step; its eager step reads the float16 weights), built
    # in a passing thread: no OpenMP team left with this thread (user_speed says why).
    decoder = in_passing_thread(StaticDecoder, model, None, rows_of(loaded.dtype))
    compiled = CompiledStep(decoder, default_cache_dir())
    started = time.perf_counter()
    built = in_passing_thread(compiled.build)
    build_s = time.perf_counter() - started
    tokens_made: dict[str, list[int]] = {}

    def steps(step: Callable[..., torch.Tensor], name: str) -> None:
        tokens_made[name] = greedy_steps(decoder, step, ids, tokens)

    def transformers_forward() -> None:
        with torch.inference_mode():
            out = model(ids[None], cache=DynamicCache(config=model.config))
            token = torch.tensor([[5]])
            for _ in range(tokens):
                out = model(token, cache=out.cache)

    # Each path in its own passing thread, as the app decodes (benchmarks.user_speed says why); profiled in this one,
    # the thread torch.profiler records.
    direct = {
        "transformers_forward": transformers_forward,
        "static_eager": lambda: steps(decoder.step, "static_eager"),
    }
    if built:
        direct["compiled"] = lambda: steps(compiled, "compiled")
    paths = {name: (lambda run=run: in_passing_thread(run)) for name, run in direct.items()}
    figures = interleaved(paths, rounds, tokens)
    return {
        "benchmark": "benchmarks.static_step",
        "machine": {**machine_info(), "threads": threads},
        "settings": {"model": loaded.base_id, "cpu_mode": loaded.dtype, "prompt_tokens": len(ids), "tokens": tokens},
        "compile": {
            "built": built,
            "status": compiled.status,
            "seconds": round(build_s, 1),
            "cache": str(compiled.folder),
        },
        "paths": figures,
        "aten_ops_per_token": {name: ops_per_token(run, tokens) for name, run in direct.items()},
        "compiled_tokens_equal_eager": tokens_made.get("compiled") == tokens_made.get("static_eager")
        if built
        else None,
    }


def ops_per_token(run: Callable[[], Any], tokens: int) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return round(sum(event.count for event in prof.key_averages()) / tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/static_step.json"))
    args = parser.parse_args(argv)
    result = measure(args.rounds, args.tokens, args.threads)
    result["command"] = " ".join(["python -m benchmarks.static_step", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: result[k] for k in ("compile", "paths", "aten_ops_per_token")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
