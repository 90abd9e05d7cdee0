"""benchmarks/gpu_check.py: runs on a CUDA machine; here, that it refuses plainly without one, and its dry run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the check itself")
def test_without_cuda_the_check_refuses_with_exit_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--skip-embedded"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_the_table_lists_every_mode_of_every_model() -> None:
    figures = {"ttft_ms": 12.5, "decode_tok_s": 150.0, "warmup_s": 1.0}
    report = {
        "models": [
            {
                "name": "embedded-270m",
                "loaded": True,
                "app": {"streamed": True},
                "generation": {
                    mode: {**figures, **({"compile_s": 30.0} if mode == "static_aot" else {})}
                    for mode in gpu_check.MODES
                },
            }
        ]
    }
    table = gpu_check.format_table(report)
    assert all(mode in table for mode in gpu_check.MODES) and "30.0" in table and "150.0" in table


# The tiny model served, and its step compiled by AOTInductor for the CPU: ~1 min on 2 shared cores.
@pytest.mark.slow
def test_the_dry_run_runs_every_part_on_the_cpu_and_the_compiled_step_decodes_as_eager(tmp_path: Path) -> None:
    assert gpu_check.main(["--dry-run", "--out", str(tmp_path / "dry-run.json")]) == 0
    report = json.loads((tmp_path / "dry-run.json").read_text())
    (tiny,) = report["models"]
    assert tiny["app"]["streamed"] and set(tiny["generation"]) == set(gpu_check.MODES)
    compiled = tiny["generation"]["static_aot"]
    assert compiled["tokens_equal_static_eager"] and compiled["compile_s"] > 0 and compiled["decode_tok_s"] > 0
    assert set(tiny["zerogpu_ask_s"]) == {"prior", *gpu_check.MODES}
