"""benchmarks/gpu_check.py: runs only on a CUDA machine; here, that it imports and refuses plainly without one."""

from __future__ import annotations

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
                    mode: {**figures, **({"compile_s": 30.0} if mode == "compiled" else {})}
                    for mode in gpu_check.MODES
                },
            }
        ]
    }
    table = gpu_check.format_table(report)
    assert all(mode in table for mode in gpu_check.MODES) and "30.0" in table and "150.0" in table
