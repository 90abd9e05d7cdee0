"""medcot.model.progress: the load's progress as terminal lines."""

from __future__ import annotations

import io

from medcot.model.progress import ProgressLines


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_per_step_and_a_moving_step_at_most_every_few_seconds() -> None:
    out, clock = io.StringIO(), Clock()
    lines = ProgressLines(out, repeat_s=5.0, clock=clock)
    lines("Loading the base model", None)
    for done in range(1, 101):  # a step reporting as it moves, 4 reports a second
        clock.now += 0.25
        lines(f"Dequantizing: {done}/100 tensors", done / 100)
    lines("Model ready", 1.0)

    assert out.getvalue().splitlines() == [
        "… Loading the base model",
        "… Dequantizing: 1/100 tensors (1%)",
        "… Dequantizing: 21/100 tensors (21%)",
        "… Dequantizing: 41/100 tensors (41%)",
        "… Dequantizing: 61/100 tensors (61%)",
        "… Dequantizing: 81/100 tensors (81%)",
        "… Model ready (100%)",
    ]
