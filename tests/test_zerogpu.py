"""ZeroGPU glue: durations, the decorated stream's cancellation, and where the model loads."""

from __future__ import annotations

import threading

import pytest
from tiny import ADAPTER_ANSWER, QUESTIONS

from medcot import zerogpu
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.events import AnswerDelta


def test_gpu_duration_grows_with_the_token_budget_and_is_capped() -> None:
    short = zerogpu.gpu_seconds("q", [], GenerationParams(max_new_tokens=64))
    long = zerogpu.gpu_seconds("q", [], GenerationParams(max_new_tokens=2048))
    assert zerogpu.GPU_BASE_SECONDS < short < long <= zerogpu.GPU_MAX_SECONDS
    assert zerogpu.gpu_seconds("q", [], GenerationParams(max_new_tokens=4096)) == zerogpu.GPU_MAX_SECONDS


def test_off_zerogpu_the_stream_is_the_engines(engine: Engine) -> None:
    assert not zerogpu.on_zero_gpu()
    events = list(zerogpu.gpu_stream(engine)(QUESTIONS[0], [], GenerationParams(temperature=0, max_new_tokens=64)))
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)).strip() == ADAPTER_ANSWER


def test_on_zerogpu_the_decorated_stream_stops_between_events(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # ZeroGPU itself cannot run here: pretend to be on it, with spaces.GPU as the identity (its behaviour off
    # ZeroGPU), so the path that checks the cancel event between events is the one exercised.
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: True)
    durations: list[object] = []

    def fake_gpu(duration: object):
        durations.append(duration)
        return lambda fn: fn

    monkeypatch.setattr(zerogpu.spaces, "GPU", fake_gpu)
    cancel = threading.Event()
    stream = zerogpu.gpu_stream(engine)
    assert durations == [zerogpu.gpu_seconds]
    seen = []
    for event in stream(QUESTIONS[0], [], GenerationParams(temperature=0, max_new_tokens=64), True, cancel):
        seen.append(event)
        cancel.set()
    assert len(seen) == 1  # stopped right after the event that saw the cancel
    assert not any(t.name == "medcot-generate" for t in threading.enumerate())


def test_model_loads_at_import_on_zerogpu_and_in_the_background_elsewhere(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: True)
    eager = zerogpu.start_engine(Engine(tiny_settings))
    assert eager.ready  # loaded before start_engine returned
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: False)
    lazy = zerogpu.start_engine(Engine(tiny_settings))
    assert lazy.wait_until_loaded(60) and lazy.ready
