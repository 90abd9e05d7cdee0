"""The eval's outputs: a table for the terminal and a PNG chart of the runs side by side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.eval_metrics import TARGETS

# (summary key, column title, kind) in the table's order; "rate" prints as a percentage.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("questions", "n", "count"),
    ("compliant", "format ok", "rate"),
    ("closed_by_app", "app closed", "rate"),
    ("reasoning_shown", "reasoning", "rate"),
    ("usable", "usable", "rate"),
    ("empty", "empty", "rate"),
    ("loop", "loop", "rate"),
    ("cut_off", "cut off", "rate"),
    ("match", "match", "rate"),
    ("answer_words", "answer w", "mean"),
    ("reasoning_words", "reason w", "mean"),
    ("tokens_per_second", "tok/s", "mean"),
)
# What the chart shows, per run: the three targets' metrics, the format and the match.
CHARTED: tuple[tuple[str, str], ...] = (
    ("usable", "non-empty, no loop"),
    ("reasoning_shown", "reasoning shown"),
    ("ended_before_limit", "ended before the limit"),
    ("compliant", "<think>…</think> + answer"),
    ("match", "match (with reference)"),
)


def run_name(run: dict[str, Any]) -> str:
    return f"{run['model']}/{run['variant']}"


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value:.0%}"
    if kind == "count":
        return str(value)
    return f"{value:.1f}"


def table(runs: Sequence[dict[str, Any]]) -> str:
    """A plain-text table, one row per run, with the targets each run meets."""
    header = ["run", *(title for _, title, _ in COLUMNS), "targets"]
    rows = []
    for run in runs:
        summary = run["summary"]
        cells = [_cell(summary.get(key), kind) for key, _, kind in COLUMNS]
        if summary.get("match_questions"):
            cells[[key for key, _, _ in COLUMNS].index("match")] += f" of {summary['match_questions']}"
        met = summary.get("targets_met", {})
        rows.append([run_name(run), *cells, f"{sum(met.values())}/{len(TARGETS)}"])
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)) for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def chart(runs: Sequence[dict[str, Any]], path: Path, title: str = "MedCoT eval") -> None:
    """Grouped bars: one group per metric, one bar per run; the targets as ticks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 0.8 / max(len(runs), 1)
    figure, axes = plt.subplots(figsize=(10, 4.8), dpi=120)
    for index, run in enumerate(runs):
        values = [run["summary"].get(key) or 0.0 for key, _ in CHARTED]
        positions = [group + (index - (len(runs) - 1) / 2) * width for group in range(len(CHARTED))]
        bars = axes.bar(positions, [v * 100 for v in values], width, label=run_name(run))
        crowded = len(runs) > 3  # many bars: small vertical labels, so neighbours do not overlap
        labels = [f"{v:.0%}" for v in values]
        axes.bar_label(bars, labels, fontsize=6 if crowded else 7, padding=1, rotation=90 if crowded else 0)
    for group, (key, _) in enumerate(CHARTED):
        if key in TARGETS:
            axes.hlines(TARGETS[key] * 100, group - 0.45, group + 0.45, colors="black", linestyles="dashed", lw=1)
    axes.set_xticks(range(len(CHARTED)), [label for _, label in CHARTED], fontsize=8)
    axes.set_ylabel("% of questions")
    axes.set_ylim(0, 112)
    questions = runs[0]["summary"]["questions"] if runs else 0
    axes.set_title(f"{title} ({questions} questions; dashed: targets)", fontsize=10)
    axes.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(runs), 4), frameon=False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def read_runs(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """The runs stored in eval JSON files, in the order given."""
    runs: list[dict[str, Any]] = []
    for path in paths:
        runs += json.loads(path.read_text(encoding="utf-8"))["runs"]
    return runs
