"""The benchmark of issue 5, in one command: raw model vs the running app, the CPU modes, cold start and memory.

    python -m benchmarks.bench [--model DIR|embedded] [--out docs/bench/bench.json] [--chart docs/bench/bench.png]
                           [--rounds 5] [--new-tokens 64] [--cold-starts 2] [--long-session 20] [--quick]

Everything runs on this machine, one thing at a time: the CPU modes side by side (benchmarks.bench_cpu, quality check
included), then fresh `python app.py` processes timed from process start to their first served token, then raw
`model.generate` in this process against the same model served by a running app over `gradio_client`, in
interleaved rounds (raw, app, raw, app, ...), then a long multi-turn session in a fresh app for its memory after use
(benchmarks.bench_session). It prints a table with each target, writes the figures as JSON and
draws them as a PNG chart. See docs/benchmark.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.app_process import AppProcess, app_env
from benchmarks.app_vs_raw import app_vs_raw, measure_start, median, round_to
from benchmarks.bench_cpu import run_modes
from benchmarks.bench_session import compare_status, measure_long_session
from benchmarks.chart import draw_chart
from benchmarks.client import serve_when_ready, timed_client
from benchmarks.machine import machine_info
from benchmarks.report import evaluate_targets, format_markdown, format_table
from medcot.config import Settings
from medcot.model.cpu_speed import CPU_MODES
from medcot.model.embedded import EMBEDDED_ID
from medcot.model.loading import load_model

# Served greedily by the embedded base (f16-int8head), this question gets 71 tokens before the base starts a new
# "### Question:" turn (where the app stops): 64 new tokens are produced in full on both sides.
APP_QUESTION = "Explain step by step how to assess a patient with acute shortness of breath."


@dataclass
class Options:
    model: str = "embedded"  # a folder of full weights and tokenizer, or "embedded"
    cache_dir: Path | None = None
    cpu_mode: str = "auto"
    modes: Sequence[str] = tuple(m for m in CPU_MODES if m != "auto")
    rounds: int = 5
    mode_rounds: int = 5
    new_tokens: int = 64
    cold_starts: int = 2
    question: str = APP_QUESTION
    quality: bool = True
    long_session: int = 20  # answers of long_session_tokens in one conversation (benchmarks.bench_session); 0: skip
    long_session_tokens: int = 512


def model_folder(options: Options) -> Path:
    if options.model != "embedded":
        return Path(options.model)
    from medcot.model.embedded import embedded_model_dir

    return embedded_model_dir(options.cache_dir, lambda message, fraction: print(message, flush=True))


def run_benchmark(options: Options, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Every figure of the issue, one phase at a time, as one JSON-ready dict (targets included)."""
    folder = model_folder(options)
    env = app_env(options.model, options.cpu_mode, options.cache_dir)
    result: dict[str, Any] = {"benchmark": "benchmarks.bench", "machine": machine_info()}

    report("Loading the model as the app does")
    settings = Settings.from_env(env)
    loaded = load_model(settings)
    applied = loaded.dtype  # the CPU mode "auto" resolved to here; the app is started with it pinned
    result["settings"] = {
        "model": str(folder),
        "model_name": EMBEDDED_ID if options.model == "embedded" else folder.name,
        "requested_mode": options.cpu_mode,
        "applied_mode": applied,
        "new_tokens": options.new_tokens,
        "rounds": options.rounds,
        "cold_starts": options.cold_starts,
        "question": options.question,
    }

    modes = list(dict.fromkeys([*options.modes, applied])) if options.modes else []
    if modes:
        report(f"CPU modes side by side: {', '.join(modes)}")
        result["cpu_modes"] = run_modes(
            folder, modes, options.mode_rounds, options.new_tokens, quality=options.quality, report=report
        )
        gc.collect()

    starts: list[dict[str, Any]] = []
    app: AppProcess | None = None
    try:
        for index in range(options.cold_starts):  # one app process at a time, each started afresh
            if app is not None:
                app.stop()
            app = AppProcess(env).start()
            starts.append(measure_start(app, options.question, options.new_tokens))
            report(f"cold start {index + 1}/{options.cold_starts}: {starts[-1]}")
        if app is None or options.cpu_mode != applied:
            # "auto" is pinned to what it resolved to in this process, so both sides surely run the same mode.
            if app is not None:
                app.stop()
            app = AppProcess({**env, "MEDCOT_CPU_MODE": applied}).start()
            app.wait_until_listening()
            serve_when_ready(timed_client(app.url), options.question, options.new_tokens, app)
        report(f"App vs raw ({applied}), {options.rounds} interleaved rounds of {options.new_tokens} new tokens")
        compared = app_vs_raw(settings, loaded, app.url, options.question, options.new_tokens, options.rounds, report)
        result["app_vs_raw"] = {**compared, "app_memory_after_rounds": app.memory()}
    finally:
        if app is not None:
            app.stop()
    if starts:
        summary = {k: round_to(median([s[k] for s in starts]), 3) for k in starts[0] if k != "peak_rss_mib"}
        summary["peak_rss_mib"] = max(s["peak_rss_mib"] or 0 for s in starts)
        result["cold_start"] = {**summary, "mode": options.cpu_mode, "runs": starts}

    if options.long_session:
        report(f"Long session: {options.long_session} answers of up to {options.long_session_tokens} tokens")
        app = AppProcess({**env, "MEDCOT_CPU_MODE": applied}).start()
        try:
            result["long_session"] = {
                "compare": compare_status(env) or "on and off",
                **measure_long_session(app, options.long_session, options.long_session_tokens, report),
            }
        finally:
            app.stop()

    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="folder of full weights + tokenizer, or 'embedded'")
    parser.add_argument("--cache-dir", type=Path, help="MEDCOT_CACHE_DIR for the embedded model")
    parser.add_argument("--cpu-mode", default=os.environ.get("MEDCOT_CPU_MODE", "").strip() or "auto")
    parser.add_argument("--modes", default=",".join(m for m in CPU_MODES if m != "auto"), help="'' skips them")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, per comparison")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--cold-starts", type=int, default=2)
    parser.add_argument("--question", default=APP_QUESTION, help="asked of the app and the raw model")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/bench.json"))
    parser.add_argument("--chart", type=Path, default=Path("docs/bench/bench.png"))
    parser.add_argument("--long-session", type=int, default=20, help="answers in the long-session phase; 0 skips")
    parser.add_argument("--quick", action="store_true", help="2 rounds, 32 tokens, 1 cold start, f32 + served mode")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a result's table as Markdown; no run")
    args = parser.parse_args(argv)
    if args.markdown:
        print(format_markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        return 0
    cache_dir = args.cache_dir or Settings.from_env().cache_dir
    options = Options(
        model=args.model,
        cache_dir=cache_dir,
        cpu_mode=args.cpu_mode,
        modes=[m.strip() for m in args.modes.split(",") if m.strip()],
        rounds=args.rounds,
        mode_rounds=args.rounds,
        new_tokens=args.new_tokens,
        cold_starts=args.cold_starts,
        question=args.question,
        long_session=args.long_session,
    )
    if args.quick:
        options.rounds = options.mode_rounds = 2
        options.new_tokens = 32
        options.cold_starts = 1
        options.modes = ["f32"]
        options.long_session = min(options.long_session, 2)
    result = run_benchmark(options)
    result["command"] = " ".join(["python -m benchmarks.bench", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    draw_chart(result, args.chart)
    print(format_table(result))
    print(f"wrote {args.out} and {args.chart}")
    return 0  # a benchmark reports; the targets' pass/fail is in the table and the JSON


if __name__ == "__main__":
    sys.exit(main())
