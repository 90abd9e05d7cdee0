"""CPU decoding benchmark and quality check for the CPU modes (medcot.model.cpu_speed) on the embedded Gemma 3 270M.

    python -m benchmarks.bench_cpu --out artifacts/bench_cpu.json [--model DIR] [--rounds 5] [--threads 1,2]

Every mode is loaded once, then the runs are interleaved (mode A, B, C, A, B, C, ...) so that load from other
processes on a shared machine hits all modes alike; medians are reported. The quality check compares each mode's
greedy output with float32's on fixed prompts. Cold start is measured in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from medcot.config import default_cache_dir
from medcot.model.compiled_step import compile_into
from medcot.model.cpu_speed import CPU_MODES, optimize_for_cpu
from medcot.model.static_decode import StaticDecoder
from medcot.model.step_rows import COMPILED_ROWS
from medcot.prompt import encode_prompt
from medcot.static_generation import StaticGenerator

# ~135 tokens once rendered with the card's system prompt, as in the measurements.
BENCH_QUESTION = (
    "A 24-year-old woman has fever, dysuria and right flank pain. What is the most likely diagnosis and the "
    "first-line treatment?"
)
# The fixed prompt set of the quality check. The 5th has a near-tie at its first token in f32 (top-2 logits
# ~0.01 apart), so it catches any mode whose numerics drift.
QUALITY_QUESTIONS = (
    "A 65-year-old with exertional dyspnea and orthopnea presents with bilateral pitting edema and raised JVP. "
    "What initial pharmacologic therapy is indicated?",
    BENCH_QUESTION,
    "What are the classic signs of diabetic ketoacidosis?",
    "A child presents with a barking cough and inspiratory stridor. What is the most likely diagnosis?",
    "Which electrolyte abnormality causes peaked T waves on ECG?",
    "A 55-year-old smoker has painless hematuria. What investigation should be done first?",
)
QUALITY_TOKENS = 32  # a mode passes when its first 32 greedy tokens equal f32's on every quality prompt


class TokenClock(BaseStreamer):
    """Timestamps of generate()'s streamer calls: the prompt first, then one call per new token."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: torch.Tensor) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def prompt_ids(tokenizer: PreTrainedTokenizerBase, question: str) -> torch.Tensor:
    """The question in the card's chat format, as the app sends it."""
    return torch.tensor([encode_prompt(tokenizer, question).input_ids])


def measure_decode(model: Any, tokenizer: PreTrainedTokenizerBase, prompt: torch.Tensor, new_tokens: int) -> dict:
    """One greedy generation of exactly `new_tokens`: time to first token and decode speed after it."""
    clock = TokenClock()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            streamer=clock,
            pad_token_id=tokenizer.pad_token_id,
        )
    tokens = clock.times[1:]
    return {
        "ttft_s": tokens[0] - start,
        "decode_tok_s": (len(tokens) - 1) / (tokens[-1] - tokens[0]),
        "total_s": tokens[-1] - start,
    }


def greedy_tokens(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompt: torch.Tensor,
    new_tokens: int,
    static: StaticGenerator | None = None,
) -> list:
    """Greedy tokens after `prompt` from generate(), or from `static`'s decode step as the app runs it on CPU
    (medcot.static_generation), stopping at the generation config's end tokens either way."""
    generate = model.generate if static is None else static.generate
    with torch.inference_mode():
        out = generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=model.generation_config.eos_token_id,
        )
    return out[0, prompt.shape[1] :].tolist()


def quality_check(
    reference: Sequence[list[int]],
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[torch.Tensor],
    static: bool = False,
    rows: str | None = None,
) -> dict:
    """Compare a mode's greedy tokens (from the static step with `static`, through its packed `rows`,
    medcot.model.step_rows, compiled as the app compiles it for rows only a compiled step reads) with the f32
    reference's on each prompt.

    `first_difference` is the index of the first differing token, or None where the outputs are equal.
    """
    # One decoder for every prompt: building it fuses (and with `rows` packs) the decoder matrices again.
    generator = StaticGenerator(StaticDecoder(model, rows=rows)) if static else None
    if generator is not None and rows in COMPILED_ROWS and not compile_into(generator, default_cache_dir()):
        raise RuntimeError(f"the step for {rows} rows did not compile: {generator.compiled.status}")
    firsts: list[int | None] = []
    for ref, prompt in zip(reference, prompts, strict=True):
        got = greedy_tokens(model, tokenizer, prompt, QUALITY_TOKENS, generator)
        diverged = (i for i, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b)
        firsts.append(None if got == ref else next(diverged, min(len(got), len(ref))))
    return {"first_difference": firsts, "passed": all(first is None for first in firsts)}


def load_model(model_dir: Path, mode: str) -> tuple[Any, str, float]:
    start = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    model, applied = optimize_for_cpu(model, mode)
    return model, applied, time.perf_counter() - start


def run_modes(
    model_dir: Path,
    modes: Sequence[str],
    rounds: int = 5,
    new_tokens: int = 64,
    threads: Sequence[int] = (),
    quality: bool = True,
    report: Callable[[str], None] = print,
) -> dict:
    """Load every mode, check its quality against f32, then time interleaved runs of all of them."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    bench_prompt = prompt_ids(tokenizer, BENCH_QUESTION)
    result: dict[str, Any] = {"prompt_tokens": bench_prompt.shape[1], "new_tokens": new_tokens, "modes": {}}
    models = {}
    for mode in modes:
        model, applied, seconds = load_model(model_dir, mode)
        models[mode] = model
        result["modes"][mode] = {"applied": applied, "load_and_optimize_s": round(seconds, 2)}
        report(f"{mode}: loaded as {applied} in {seconds:.1f} s")
    if quality:
        prompts = [prompt_ids(tokenizer, question) for question in QUALITY_QUESTIONS]
        reference_model = models.get("f32") or load_model(model_dir, "f32")[0]
        reference = [greedy_tokens(reference_model, tokenizer, prompt, QUALITY_TOKENS) for prompt in prompts]
        for mode, model in models.items():
            check = quality_check(reference, model, tokenizer, prompts)
            result["modes"][mode]["quality"] = check
            report(f"{mode}: quality {'passed' if check['passed'] else 'FAILED'} {check['first_difference']}")
    variants = [(mode, n) for mode in modes for n in (threads or [torch.get_num_threads()])]
    runs: dict[tuple[str, int], list[dict]] = {variant: [] for variant in variants}
    for model in models.values():
        measure_decode(model, tokenizer, bench_prompt, 4)  # warm-up: first-call allocations
    default_threads = torch.get_num_threads()
    for _ in range(rounds):
        for mode, n in variants:
            torch.set_num_threads(n)
            runs[mode, n].append(measure_decode(models[mode], tokenizer, bench_prompt, new_tokens))
    torch.set_num_threads(default_threads)
    for (mode, n), samples in runs.items():
        speeds = [s["decode_tok_s"] for s in samples]
        ttfts = [s["ttft_s"] for s in samples]
        entry = {
            "decode_tok_s_median": round(statistics.median(speeds), 1),
            "decode_tok_s_max": round(max(speeds), 1),
            "ttft_s_median": round(statistics.median(ttfts), 3),
            "decode_tok_s": [round(s, 1) for s in speeds],
            "ttft_s": [round(t, 3) for t in ttfts],
        }
        result["modes"][mode][f"threads_{n}"] = entry
        report(
            f"{mode:14s} threads={n}: {entry['decode_tok_s_median']:5.1f} tok/s (max {entry['decode_tok_s_max']:.1f}),"
            f" TTFT {entry['ttft_s_median'] * 1000:.0f} ms"
        )
    return result


def measure_cold_start(model_dir: Path, mode: str = "auto") -> dict:
    """Start a fresh interpreter that imports, loads and optimizes (the OS file cache is warm), then generates."""
    command = [sys.executable, "-m", "benchmarks.bench_cpu", "--cold-start-child", str(model_dir), "--modes", mode]
    root = Path(__file__).resolve().parents[1]  # where `-m benchmarks.bench_cpu` is found
    out = subprocess.run(
        [*command, "--spawned-at", repr(time.time())], capture_output=True, text=True, check=True, cwd=root
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _rss_mb() -> float | None:
    try:  # Linux; field 2 of statm is the resident set in pages
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def _cold_start_child(model_dir: Path, mode: str, spawned_at: float) -> dict:
    imported = time.time()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenized = time.time()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    loaded = time.time()
    model, applied = optimize_for_cpu(model, mode)
    ready = time.time()
    rss_ready = _rss_mb()
    measure_decode(model, tokenizer, prompt_ids(tokenizer, BENCH_QUESTION), 64)
    return {
        "mode": applied,
        "start_and_imports_s": round(imported - spawned_at, 2),
        "tokenizer_s": round(tokenized - imported, 2),
        "load_s": round(loaded - tokenized, 2),
        "optimize_s": round(ready - loaded, 2),
        "cold_start_s": round(ready - spawned_at, 2),
        "rss_ready_mb": rss_ready and round(rss_ready),
        "rss_after_generate_mb": (rss := _rss_mb()) and round(rss),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="converted model folder (default: the embedded model)")
    parser.add_argument("--modes", default=",".join(m for m in CPU_MODES if m != "auto"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--threads", default="", help="comma-separated torch thread counts to compare")
    parser.add_argument("--no-quality", action="store_true")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--cold-start-child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--spawned-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cold_start_child:
        print(json.dumps(_cold_start_child(args.cold_start_child, args.modes, args.spawned_at)))
        return 0
    if args.model is None:
        from medcot.model.embedded import embedded_model_dir

        args.model = embedded_model_dir(progress=lambda message, fraction: print(message, flush=True))
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    threads = [int(n) for n in args.threads.split(",") if n.strip()]
    result: dict[str, Any] = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "model": str(args.model),
    }
    result.update(run_modes(args.model, modes, args.rounds, args.new_tokens, threads, not args.no_quality))
    for mode in ("auto", "f32"):
        cold = measure_cold_start(args.model, mode)
        result.setdefault("cold_start", {})[mode] = cold
        print(f"cold start ({mode} -> {cold['mode']}): {cold}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
