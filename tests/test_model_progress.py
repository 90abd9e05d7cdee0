"""medcot.model.progress: the load's progress as terminal lines, and the one-time conversion's steps on the bar (the
GGUF reading itself is tested by the conversion in tests/test_embedded.py)."""

from __future__ import annotations

import io
import itertools
import threading
import time

import pytest

from medcot.model import progress as progress_module
from medcot.model.progress import ProgressLines, Steps


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


def test_a_step_without_progress_of_its_own_fills_by_time_but_never_claims_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress_module, "TICK_S", 0.01)
    calls: list[tuple[str, float | None]] = []
    seen = threading.Event()

    def progress(message: str, fraction: float | None) -> None:
        calls.append((message, fraction))
        if fraction is not None and fraction > 0.3:
            seen.set()

    steps = Steps(progress, "first start: ")
    try:
        steps.begin("reading", 0.2, 0.6, estimate_s=0.2)
        assert seen.wait(10)  # the bar moves while the step reports nothing
        time.sleep(0.4)  # twice the estimate: still short of the step's end
        steps.advance(0.0, "tensor 1/2")  # its own movement takes over from where the time left it
        steps.advance(0.5, "tensor 2/2")
        steps.advance(1.0, "2/2 tensors")
        steps.begin("saving", 0.6, 1.0, estimate_s=5)
    finally:
        steps.close()

    first_tensor = next(i for i, (message, _) in enumerate(calls) if "tensor" in message)
    reading = [fraction for _, fraction in calls[:first_tensor]]
    assert {message for message, _ in calls[:first_tensor]} == {"first start: reading (one time, up to ~0 s)"}
    assert 0.3 < max(reading) <= 0.2 + 0.9 * 0.4 + 1e-9
    fractions = [fraction for _, fraction in calls]
    assert all(a <= b for a, b in itertools.pairwise(fractions))  # never back
    advanced = [(message, fraction) for message, fraction in calls if "tensor" in message]
    assert [message for message, _ in advanced] == [
        "first start: reading: tensor 1/2",
        "first start: reading: tensor 2/2",
        "first start: reading: 2/2 tensors",
    ]
    assert advanced[0][1] == max(reading) and advanced[-1][1] == pytest.approx(0.6)
    assert advanced[1][1] == pytest.approx((max(reading) + 0.6) / 2)
    assert calls[-1] == ("first start: saving (one time, up to ~5 s)", pytest.approx(0.6))
