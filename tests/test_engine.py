"""medcot.engine: answers through its backend, cancellation, the base comparison, the checks prepare runs, loading."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from medcot.config import GenerationParams, Settings
from medcot.engine import Engine, in_passing_thread
from medcot.errors import InputError, ModelLoadError, PromptTooLongError
from medcot.events import ReasoningDelta
from medcot.model.adapter_switch import AdapterSwitch
from medcot.model.loading import load_model
from medcot.prompt import Turn, encode_prompt
from medcot.request import Query
from tests.helpers.polling import wait_until
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, BASE_OUTPUT

QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)


def no_generation_thread(within: float = 1.0) -> bool:
    return wait_until(lambda: not any(t.name == "medcot-generate" for t in threading.enumerate()), within)


@pytest.mark.parametrize("kind", ["merged", "unmerged"])
def test_base_comparison_answers_as_the_base_and_leaves_the_adapter_on(
    kind: str, engine: Engine, unmerged_engine: Engine
) -> None:
    served = engine if kind == "merged" else unmerged_engine
    base = served.ask(Query(QUESTION, params=GREEDY, use_adapter=False))
    assert base.answer == BASE_OUTPUT and base.reasoning == ""
    assert base.stats.reasoning_tokens == 0 and base.stats.answer_tokens == base.stats.new_tokens
    assert served.ask(Query(QUESTION, params=GREEDY)).answer == ADAPTER_ANSWER  # adapter back on


def test_merged_adapter_keeps_its_factors_and_unmerged_needs_none(engine: Engine, unmerged_engine: Engine) -> None:
    delta = engine.loaded.base_delta
    assert delta is not None and not delta.attached
    assert len(delta.factors) == 2 * 7  # every linear projection of the 2 tiny layers
    assert unmerged_engine.loaded.base_delta is None


def test_base_from_merged_weights_is_refused_when_the_merge_cannot_be_undone(engine: Engine) -> None:
    undoable = Engine(engine.settings, replace(engine.loaded, base_delta=None))
    assert "MEDCOT_MERGE=0" in undoable.compare_unavailable()
    with pytest.raises(InputError, match="MEDCOT_MERGE=0"):
        undoable.ask(Query(QUESTION, params=GREEDY, use_adapter=False))
    assert undoable.ask(Query(QUESTION, params=GREEDY)).answer == ADAPTER_ANSWER


def test_cancel_before_start_stops_after_one_token(engine: Engine) -> None:
    cancel = threading.Event()
    cancel.set()
    events = list(engine.stream(Query(QUESTION, params=GREEDY), cancel))
    stats = events[-1].stats
    assert stats.stopped and stats.new_tokens == 1 and not stats.hit_token_limit
    assert no_generation_thread()


def test_closing_the_stream_stops_generation(engine: Engine) -> None:
    stream = engine.stream(Query(QUESTION, params=GREEDY))
    first = next(stream)
    assert isinstance(first, ReasoningDelta)
    stream.close()
    assert no_generation_thread()
    assert engine.ask(Query(QUESTION, params=GREEDY)).answer == ADAPTER_ANSWER  # the engine is still usable


def test_history_over_the_budget_drops_turns(engine: Engine) -> None:
    history = [Turn(f"Earlier question {i}?", f"Earlier answer {i}.") for i in range(3)]
    tokenizer = engine.loaded.tokenizer
    fits_one = len(encode_prompt(tokenizer, QUESTION, history[-1:]).input_ids)
    small = Engine(replace(engine.settings, max_input_tokens=fits_one), engine.loaded)
    answer = small.ask(Query(QUESTION, history, params=GREEDY))
    assert answer.stats.turns_dropped == 2
    assert answer.stats.prompt_tokens == fits_one
    tiny = Engine(replace(engine.settings, max_input_tokens=64), engine.loaded)
    with pytest.raises(PromptTooLongError, match="64"):
        tiny.ask(Query(QUESTION, history, params=GREEDY))


def test_parameters_are_validated(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"^temperature"):
        engine.ask(Query(QUESTION, params=GenerationParams(temperature=float("nan"))))
    with pytest.raises(ValueError, match=r"^max_new_tokens"):
        engine.ask(Query(QUESTION, params=GenerationParams(max_new_tokens=0)))


def test_default_params_come_from_settings(engine: Engine) -> None:
    two = Engine(replace(engine.settings, max_new_tokens=2), engine.loaded)
    stats = two.ask(Query(QUESTION)).stats
    assert stats.new_tokens == 2 and stats.hit_token_limit


# -------------------------------------------------------------------------------------------------- questions


def test_empty_question_through_the_engine(engine: Engine) -> None:
    with pytest.raises(InputError):
        list(engine.stream(Query("  ")))


# ---------------------------------------------------------------------------------------------------- loading


def test_not_loaded_yet() -> None:
    waiting = Engine(Settings())
    assert not waiting.ready
    assert "Waiting to load" in waiting.status()
    with pytest.raises(ModelLoadError, match="still loading"):
        waiting.require_model()
    assert not waiting.wait_until_loaded(0.01)


def test_background_load_reports_progress(tiny_settings: Settings) -> None:
    seen: list[str] = []
    background = Engine(tiny_settings)
    thread = threading.Thread(target=background.load, kwargs={"on_progress": lambda m, f: seen.append(m)})
    thread.start()
    assert background.wait_until_loaded(120)
    thread.join()
    assert background.ready and background.error is None
    assert seen[-1] == "Model ready" and background.progress == ("Model ready", 1.0)
    assert background.status() == background.loaded.describe() + "."


# ------------------------------------------------------------------------------------------ base comparison


@contextlib.contextmanager
def slowed(engine: Engine, seconds: float) -> Iterator[None]:
    """Each forward pass of the engine's model takes at least ``seconds``: generations that start together overlap."""
    model = engine.loaded.model
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    handle = model.register_forward_pre_hook(lambda *_: time.sleep(seconds))
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("kind", ["merged", "unmerged"])
def test_concurrent_base_and_adapter_streams_each_get_their_own_output(
    kind: str, engine: Engine, unmerged_engine: Engine
) -> None:
    """Switching the adapter off acts on the whole shared model (peft's disable_adapter() unmerged, the subtraction
    hooks merged): without the engine's switch, a base request starting during an adapter answer turned the rest of
    that answer into the base model's (and the reverse)."""
    served = engine if kind == "merged" else unmerged_engine
    results: dict[str, tuple[str, str]] = {}
    start = threading.Barrier(4)

    def run(name: str, use_adapter: bool) -> None:
        try:
            start.wait(timeout=30)
            answer = served.ask(Query(QUESTION, params=GREEDY, use_adapter=use_adapter))
            results[name] = (answer.reasoning, answer.answer)
        except Exception as exc:  # shown in the assertion below instead of lost in the thread
            results[name] = ("failed", repr(exc))

    with slowed(served, 0.01):
        for _ in range(2):
            threads = [
                threading.Thread(target=run, args=(name, name.startswith("adapter")))
                for name in ("adapter-1", "base-1", "adapter-2", "base-2")
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert results == {  # each answer from the start to the end in its own state
                "adapter-1": (ADAPTER_REASONING, ADAPTER_ANSWER),
                "adapter-2": (ADAPTER_REASONING, ADAPTER_ANSWER),
                "base-1": ("", BASE_OUTPUT),
                "base-2": ("", BASE_OUTPUT),
            }
            results.clear()
    assert served.ask(Query(QUESTION, params=GREEDY)).answer == ADAPTER_ANSWER


class FakePeft:
    """Stands in for a PeftModel: records whether its adapter is on, and checks nobody switches it mid-use."""

    def __init__(self) -> None:
        self.enabled = True
        self.switches = 0

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        self.enabled = False
        self.switches += 1
        try:
            yield
        finally:
            self.enabled = True
            self.switches += 1


def test_switch_runs_same_state_requests_together_and_never_mixes_states() -> None:
    model = FakePeft()
    switch = AdapterSwitch(model)
    inside = {True: 0, False: 0}
    seen_mixed = []
    lock = threading.Lock()

    def request(enabled: bool) -> None:
        with switch.use(enabled) as holding:
            assert holding
            with lock:
                inside[enabled] += 1
                seen_mixed.append(inside[not enabled] > 0 or model.enabled != enabled)
            time.sleep(0.02)
            with lock:
                seen_mixed.append(model.enabled != enabled)
                inside[enabled] -= 1

    threads = [threading.Thread(target=request, args=(i % 3 != 0,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen_mixed and not any(seen_mixed)
    assert model.enabled and switch.adapter_enabled  # back to the adapter once idle


def test_switch_gives_a_waiting_base_request_its_turn() -> None:
    switch = AdapterSwitch(FakePeft())
    order: list[str] = []
    release = threading.Event()

    def request(name: str, enabled: bool) -> None:
        with switch.use(enabled):
            order.append(name)
            release.wait(5)

    first = threading.Thread(target=request, args=("adapter", True), daemon=True)
    first.start()
    assert wait_until(lambda: order == ["adapter"])
    base = threading.Thread(target=request, args=("base", False), daemon=True)
    base.start()
    assert wait_until(lambda: switch._waiting[False] == 1)
    late = threading.Thread(target=request, args=("late adapter", True), daemon=True)
    late.start()
    time.sleep(0.2)
    assert order == ["adapter"]  # the late adapter request does not overtake the base request waiting before it
    release.set()
    for thread in (first, base, late):
        thread.join(5)
    assert order == ["adapter", "base", "late adapter"]
    assert switch.adapter_enabled


def test_switch_wait_ends_on_cancel() -> None:
    switch = AdapterSwitch(FakePeft())
    running = switch.use(True)
    assert running.__enter__()
    cancel = threading.Event()
    threading.Timer(0.1, cancel.set).start()
    with switch.use(False, cancel) as holding:
        assert not holding
    running.__exit__(None, None, None)
    assert switch.adapter_enabled and not any(switch._waiting.values())


def test_base_stream_stopped_while_waiting_reports_a_stop(engine: Engine) -> None:
    cancel = threading.Event()
    adapter = engine.stream(Query(QUESTION, params=GREEDY))
    with slowed(engine, 0.01):
        next(adapter)  # holds the model with the adapter on
        threading.Timer(0.1, cancel.set).start()
        events = list(engine.stream(Query(QUESTION, params=GREEDY, use_adapter=False), cancel))
        adapter.close()
    assert len(events) == 1 and events[0].stats.stopped and events[0].stats.new_tokens == 0


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "unmerged"])
def test_comparison_works_with_the_cpu_speed_modes(tiny_settings: Settings, merge: bool) -> None:
    """optimize_for_cpu swaps Linear layers for float16 ones (inside peft's LoRA layers too, unmerged); the base
    model is still reached, by name for the merged model's subtraction hooks."""
    pytest.importorskip("medcot.model.cpu_speed")
    fast = Engine(replace(tiny_settings, merge_adapter=merge, dtype="auto", cpu_mode="f16")).load()
    assert fast.ready, fast.error
    assert fast.loaded.dtype == "f16" and fast.can_compare
    assert fast.ask(Query(QUESTION, params=GREEDY, use_adapter=False)).answer == BASE_OUTPUT
    assert fast.ask(Query(QUESTION, params=GREEDY)).answer == ADAPTER_ANSWER


def test_loading_leaves_no_openmp_team_on_the_calling_thread() -> None:
    """A thread that ran a parallel torch op keeps its OpenMP team (one more OS thread); one that ran it through
    in_passing_thread does not, so generation threads never share the cores with an idle team."""
    script = """
import os, time, torch
from medcot.engine import in_passing_thread
threads = lambda: len(os.listdir("/proc/self/task"))
x = torch.randn(1024, 1024)
before = threads()
assert in_passing_thread(lambda: float((x @ x).sum())) != 0
deadline = time.monotonic() + 5
while threads() > before and time.monotonic() < deadline:  # the team's threads end just after their owner
    time.sleep(0.01)
passing = threads()
(x @ x).sum()
print(before, passing, threads())
"""
    if not Path("/proc/self/task").is_dir() or torch.get_num_threads() < 2:
        pytest.skip("needs Linux and 2 torch threads")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    before, passing, after = map(int, out.stdout.split())
    assert passing == before, "the passing thread's OpenMP team outlived it"
    assert after == before + 1, "control: a parallel op on this thread keeps a team"


def test_load_runs_in_a_passing_thread_and_its_errors_come_back(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medcot.engine

    threads: list[threading.Thread] = []

    def observed(*args: Any) -> Any:
        threads.append(threading.current_thread())
        return load_model(*args)

    monkeypatch.setattr(medcot.engine, "load_model", observed)
    assert Engine(tiny_settings).load().ready
    assert threads and threads[0] is not threading.current_thread() and not threads[0].is_alive()
    with pytest.raises(ZeroDivisionError):
        in_passing_thread(lambda: 1 / 0)
