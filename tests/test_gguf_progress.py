"""medcot.model.gguf_progress: the conversion's steps on the bar (the GGUF reading itself is tested by the
conversion in tests/test_embedded.py)."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from medcot.model import gguf_progress
from medcot.model.gguf_progress import Steps


def test_a_step_without_progress_of_its_own_fills_by_time_but_never_claims_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gguf_progress, "TICK_S", 0.01)
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
