"""The result drawn as a PNG of six panels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.report import (
    TARGET_COLD_START_S,
    TARGET_RATIO,
    TARGET_RSS_MIB,
    TARGET_TOK_S,
    TARGET_TTFT_MS,
    mode_speed,
)


def draw_chart(result: Mapping[str, Any], path: Path) -> None:
    """Six panels: tok/s per CPU mode, raw vs app tok/s and TTFT, cold start, memory, and the targets.

    A bar measured against a target is green when it meets it and red when it does not.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    machine, settings, targets = result["machine"], result["settings"], result["targets"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(
        f"MedCoT benchmark: {settings['model_name']} served as {settings['applied_mode']}, on {machine['cpu']} "
        f"({machine['cores_available']} cores, {machine['torch_threads']} torch threads), {machine['date'][:10]}",
        fontsize=12,
    )
    green, red, grey = "#2e7d32", "#c62828", "#90a4ae"

    def status(name: str) -> str:
        return green if targets[name]["passed"] else red

    def bars(ax: Any, labels: list[str], values: list[float | None], colors: list[str], fmt: str) -> None:
        drawn = ax.bar(labels, [v or 0 for v in values], color=colors)
        for bar, value in zip(drawn, values, strict=True):
            text = "n/a" if value is None else fmt.format(value)
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.margins(y=0.15)

    def target_line(ax: Any, value: float, label: str) -> None:
        ax.axhline(value, color="black", linestyle="--", linewidth=1, label=label)
        ax.legend(loc="best", fontsize=8)

    ax = axes[0][0]
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    if modes:
        names = list(modes)
        speeds = [mode_speed(modes[name]) for name in names]
        colors = [
            red
            if (modes[n].get("quality") or {}).get("passed") is False
            else green
            if (s or 0) >= TARGET_TOK_S
            else grey
            for n, s in zip(names, speeds, strict=True)
        ]
        bars(ax, [n + (" *" if n == settings["applied_mode"] else "") for n in names], speeds, colors, "{:.1f}")
        target_line(ax, TARGET_TOK_S, f"target {TARGET_TOK_S:g}")
        ax.tick_params(axis="x", labelsize=8)
    else:
        ax.text(0.5, 0.5, "not measured (--modes '')", ha="center", transform=ax.transAxes)
    ax.set_title("Raw decode tok/s per CPU mode (* served, red: quality failed)", fontsize=10)
    ax.set_ylabel("tokens/s")

    compared = result.get("app_vs_raw") or {}
    labels = ["raw generate", "app (gradio_client)"]
    ax = axes[0][1]
    speeds = [compared.get("raw_tok_s"), compared.get("app_tok_s")]
    bars(ax, labels, speeds, [grey, status("app_raw_tok_s_ratio")], "{:.1f}")
    ax.set_title(f"Decode tok/s, app/raw = {compared.get('tok_s_ratio')} (target >= {TARGET_RATIO})", fontsize=10)
    ax.set_ylabel("tokens/s")

    ax = axes[0][2]
    raw_ttft = compared.get("raw_ttft_ms")
    bars(ax, labels, [raw_ttft, compared.get("app_ttft_ms")], [grey, status("ttft_app_minus_raw_ms")], "{:.0f}")
    if raw_ttft is not None:
        target_line(ax, raw_ttft + TARGET_TTFT_MS, f"raw + {TARGET_TTFT_MS:g} ms")
    ax.set_title(f"Time to first token: app - raw = {compared.get('ttft_diff_ms')} ms", fontsize=10)
    ax.set_ylabel("ms")

    starts = result.get("cold_start") or {}
    ax = axes[1][0]
    steps = [starts.get(k) for k in ("listening_s", "model_ready_s", "first_token_s")]
    bars(ax, ["server listening", "model ready", "first token"], steps, [grey, grey, status("cold_start_s")], "{:.1f}")
    target_line(ax, TARGET_COLD_START_S, f"target {TARGET_COLD_START_S:g} s")
    ax.set_title("Cold start of python app.py, s from process start (median)", fontsize=10)
    ax.set_ylabel("seconds")

    ax = axes[1][1]
    memory = [starts.get(k) for k in ("peak_rss_mib", "rss_mib", "rss_anon_mib", "rss_file_mib")]
    bars(
        ax,
        ["peak", "steady", "anonymous", "file-backed"],
        memory,
        [status("peak_rss_mib"), grey, grey, grey],
        "{:.0f}",
    )
    target_line(ax, TARGET_RSS_MIB, f"target {TARGET_RSS_MIB:g} MiB")
    ax.set_title("App memory (RSS) after its first answer, MiB", fontsize=10)
    ax.set_ylabel("MiB")

    ax = axes[1][2]
    ax.axis("off")
    for index, target in enumerate(targets.values()):
        value = "n/a" if target["value"] is None else f"{target['value']} {target['unit']}".strip()
        line = f"{'PASS' if target['passed'] else 'FAIL'}  {target['what']}: {value} ({target['target']})"
        color = green if target["passed"] else red
        ax.text(0, 0.95 - index * 0.12, line, color=color, fontsize=9, family="monospace", transform=ax.transAxes)
    loads = f"load average at start / end: {machine['load_average_start']} / {machine.get('load_average_end')}"
    ax.text(0, 0.95 - len(targets) * 0.12, loads, fontsize=8, transform=ax.transAxes)
    ax.set_title("Targets (issue 5)", fontsize=10)

    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
