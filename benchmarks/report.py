"""The issue's targets checked against a result, and the result as a terminal table or Markdown."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The "done when" figures.
TARGET_RATIO = 0.95  # app/raw decode tokens/s
TARGET_TTFT_MS = 100.0  # app time to first token minus raw
TARGET_TOK_S = 30.0  # decode tokens/s of the served CPU mode on 2 cores, quality check passed
TARGET_COLD_START_S = 15.0  # process start to first served token, cached model
TARGET_RSS_MIB = 1536.0  # 1.5 GiB peak resident set of the app process


def _target(value: Any, target: float, unit: str, higher_is_better: bool, what: str) -> dict[str, Any]:
    passed = value is not None and (value >= target if higher_is_better else value <= target)
    sign = ">=" if higher_is_better else "<="
    return {"what": what, "value": value, "target": f"{sign} {target:g}", "unit": unit, "passed": bool(passed)}


def mode_speed(mode: Mapping[str, Any]) -> float | None:
    """Median decode tok/s of a mode in benchmarks.bench_cpu's results (at the default thread count)."""
    return next((v["decode_tok_s_median"] for k, v in mode.items() if k.startswith("threads_")), None)


def evaluate_targets(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each figure of the issue's "done when" list with its value and whether it passed."""
    served = result["settings"]["applied_mode"]
    compared = result.get("app_vs_raw") or {}
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    mode = modes.get(served, {})
    speed = mode_speed(mode)
    if speed is None:
        speed = compared.get("raw_tok_s")
    quality = (mode.get("quality") or {}).get("passed")
    starts = result.get("cold_start") or {}
    targets = {
        "app_raw_tok_s_ratio": _target(compared.get("tok_s_ratio"), TARGET_RATIO, "", True, "app/raw decode tok/s"),
        "ttft_app_minus_raw_ms": _target(
            compared.get("ttft_diff_ms"), TARGET_TTFT_MS, "ms", False, "app TTFT minus raw TTFT"
        ),
        "decode_tok_s": _target(speed, TARGET_TOK_S, "tok/s", True, f"decode speed, served mode {served}"),
        "quality_check": {
            "what": f"greedy tokens of {served} equal f32's",
            "value": quality,
            "target": "passed",
            "unit": "",
            "passed": quality is True,
        },
        "cold_start_s": _target(
            starts.get("first_token_s"), TARGET_COLD_START_S, "s", False, "cold start to 1st token"
        ),
        "peak_rss_mib": _target(starts.get("peak_rss_mib"), TARGET_RSS_MIB, "MiB", False, "app peak RSS (VmHWM)"),
    }
    if "long_session" in result:  # a run with --long-session 0 leaves it to benchmarks.bench_session
        targets["long_session_rss_mib"] = _target(
            (result["long_session"].get("memory_after_idle") or {}).get("rss_mib"),
            TARGET_RSS_MIB,
            "MiB",
            False,
            "app RSS after the long session",
        )
    return targets


def _table_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for target in result["targets"].values():
        value = target["value"]
        shown = "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        passed = "PASS" if target["passed"] else "FAIL"
        rows.append((target["what"], f"{shown} {target['unit']}".strip(), target["target"], passed))
    compared = result.get("app_vs_raw") or {}
    if compared:
        rows.append(("raw / app decode tok/s", f"{compared['raw_tok_s']} / {compared['app_tok_s']}", "", ""))
        rows.append(
            ("raw / app time to first token", f"{compared['raw_ttft_ms']} / {compared['app_ttft_ms']} ms", "", "")
        )
    return rows


def format_table(result: Mapping[str, Any]) -> str:
    """The figures against their targets, as aligned text for the terminal."""
    rows = [("figure", "value", "target", ""), *_table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_markdown(result: Mapping[str, Any]) -> str:
    """The same table in Markdown, under a line naming the machine and the date (for docs/benchmark.md)."""
    machine = result["machine"]
    end = (machine.get("load_average_end") or ["?"])[0]
    lines = [
        f"Measured {machine['date'][:10]} on {machine['cpu']}, {machine['cores_available']} cores "
        f"({machine['torch_threads']} torch threads), torch {machine['torch']}, "
        f"transformers {machine['transformers']}, gradio {machine['gradio']}; load average (1 min) "
        f"{machine['load_average_start'][0]} at the start, {end} at the end.",
        "",
        "| figure | value | target | |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in _table_rows(result)]
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    if modes:
        lines += ["", "| CPU mode | decode tok/s (median) | time to first token | greedy tokens equal f32's |"]
        lines += ["| --- | --- | --- | --- |"]
        for name, mode in modes.items():
            timing = next((v for k, v in mode.items() if k.startswith("threads_")), {})
            served = " (served)" if name == result["settings"]["applied_mode"] else ""
            quality = (mode.get("quality") or {}).get("passed")
            ttft = timing.get("ttft_s_median")
            lines.append(
                f"| {name}{served} | {timing.get('decode_tok_s_median')} | "
                f"{'n/a' if ttft is None else f'{ttft * 1e3:.0f} ms'} | {quality} |"
            )
    return "\n".join(lines)
