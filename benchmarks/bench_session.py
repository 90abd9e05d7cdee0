"""The benchmark's long-session phase (issue 14): the app's memory after many long answers, not only its peak over
a few short ones.

    python -m benchmarks.bench_session [--answers 20] [--new-tokens 512] [--out docs/bench/long_session.json]

A fresh `python app.py` serves one multi-turn conversation over `/chat` (gradio_client keeps it per session, as
the page does): `--answers` questions, each allowed `--new-tokens`, sampled as the app's defaults sample (so the
answers are long and differ). The app's resident memory is read from /proc after every answer and once more after
it has been idle for a few seconds; the last figure is held against the 1536 MiB target.

The comparison (the base model answering beside the fine-tuned one) doubles the generations per question, but the
embedded Gemma 3 270M base has no adapter, so with it there is nothing to compare: the phase then records compare
as unavailable, with the app's own reason, and runs compare off only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.app_process import AppProcess, app_env
from benchmarks.client import is_loading_refusal, parse_stats, stats_line
from benchmarks.machine import machine_info
from benchmarks.report import TARGET_RSS_MIB

# Follow-ups in the card's style: each turn builds on the conversation so far, as a person's session would.
QUESTIONS = [
    "A 65-year-old with exertional dyspnea and orthopnea presents with bilateral pitting edema and raised JVP. "
    "What initial pharmacologic therapy is indicated?",
    "Which laboratory tests would you order before starting it, and why?",
    "The patient also has chronic kidney disease stage 3. How does that change the plan?",
    "Explain step by step how you would monitor the response over the first week.",
    "What are the warning signs that would require hospital admission?",
]
IDLE_S = 5.0  # the app idle after the session: what it keeps, not what a request has in flight
_START_TIMEOUT_S = 300.0


def ask_in_session(client: Any, question: str, new_tokens: int, timeout: float = 900.0) -> dict[str, Any]:
    """One /chat request in the client's current session (the conversation so far goes with it)."""
    started = time.perf_counter()
    final = client.predict(question, new_tokens, 0.7, 0.95, 64, 1.0, api_name="/chat")
    return {"seconds": round(time.perf_counter() - started, 2), **parse_stats(stats_line(final))}


def wait_until_ready(client: Any, app: AppProcess) -> None:
    from gradio_client.exceptions import AppError

    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        app.check_alive()
        try:
            client.predict("Is the model ready?", 1, 0.0, 0.95, 64, 1.0, api_name="/chat")
            client.reset_session()
            return
        except AppError as exc:
            if not is_loading_refusal(exc) or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def measure_long_session(
    app: AppProcess,
    answers: int,
    new_tokens: int,
    report: Callable[[str], None] = print,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    """Resident memory of a running app after each of `answers` multi-turn answers, and after idling.

    With ``max_minutes``, no new question is asked once that much time has gone (a busy shared machine): the
    result says how many answers it got.
    """
    started = time.monotonic()
    from gradio_client import Client

    app.wait_until_listening()
    client = Client(app.url, verbose=False, ssl_verify=False)
    wait_until_ready(client, app)
    before = app.memory()
    turns: list[dict[str, Any]] = []
    for index in range(answers):
        if max_minutes is not None and time.monotonic() - started > max_minutes * 60:
            report(f"stopping after {index} answers: {max_minutes:g} minutes are over")
            break
        answer = ask_in_session(client, QUESTIONS[index % len(QUESTIONS)], new_tokens)
        turns.append({**answer, **app.memory()})
        report(f"answer {index + 1}/{answers}: {turns[-1]}")
    time.sleep(IDLE_S)
    after = app.memory()
    client.close()
    rss = after["rss_mib"]
    return {
        "answers": len(turns),
        "answers_planned": answers,
        "new_tokens": new_tokens,
        "tokens_generated": sum(t.get("tokens") or 0 for t in turns),
        "memory_before": before,
        "memory_after_idle": after,
        "turns": turns,
        "target": {
            "what": "app RSS (VmRSS) after the long session, idle",
            "value": rss,
            "target": TARGET_RSS_MIB,
            "unit": "MiB",
            "passed": rss is not None and rss <= TARGET_RSS_MIB,
        },
    }


def compare_status(env: dict[str, str]) -> str | None:
    """Why the comparison cannot run with these settings (None when it can)."""
    if not env.get("MEDCOT_ADAPTER"):
        return "unavailable: no adapter is served (the embedded Gemma 3 270M base has none), so nothing to compare"
    return None


def run(
    model: str,
    cpu_mode: str,
    answers: int,
    new_tokens: int,
    report: Callable[[str], None] = print,
    max_minutes: float | None = None,
) -> dict[str, Any]:
    env = app_env(model, cpu_mode)
    result: dict[str, Any] = {"benchmark": "benchmarks.bench_session", "machine": machine_info()}
    result["settings"] = {"model": model, "cpu_mode": cpu_mode, "answers": answers, "new_tokens": new_tokens}
    unavailable = compare_status(env)
    result["compare"] = {"on": unavailable or "not measured", "off": "measured"}
    app = AppProcess(env).start()
    try:
        result["compare_off"] = measure_long_session(app, answers, new_tokens, report, max_minutes)
    finally:
        app.stop()
    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]  # a shared machine: say so
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="folder of full weights + tokenizer, or 'embedded'")
    parser.add_argument("--cpu-mode", default="auto")
    parser.add_argument("--answers", type=int, default=20)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--max-minutes", type=float, help="ask no new question after this long (a busy machine)")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/long_session.json"))
    args = parser.parse_args(argv)
    result = run(args.model, args.cpu_mode, args.answers, args.new_tokens, max_minutes=args.max_minutes)
    result["command"] = " ".join(["python -m benchmarks.bench_session", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    target = result["compare_off"]["target"]
    print(
        f"RSS after the session: {target['value']} MiB (target <= {target['target']:g}): "
        f"{'pass' if target['passed'] else 'FAIL'}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
