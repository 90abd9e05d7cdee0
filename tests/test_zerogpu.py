"""ZeroGPU glue: where the model loads, GpuEvents' contract with a GPU generator, and MeteredRun's measurements and
readable errors (spaces' own errors, built by spaces' own function).

spaces itself runs in tests/test_zerogpu_space.py (app.py under the real runtime); here only the glue's own logic,
with plain generators standing in for the one spaces returns.
"""

from __future__ import annotations

import ast
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import pytest
from spaces.zero.client import html_string
from spaces.zero.gradio import error as spaces_error

from medcot import zerogpu
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, Stats
from medcot.gpu_budget import GpuBudget
from medcot.gpu_refusals import CUT_OFF, WORKER_FAILED
from medcot.request import Query
from tests.helpers.tiny import ADAPTER_ANSWER, QUESTIONS

APP = Path(__file__).resolve().parents[1] / "app.py"


def test_off_zerogpu_the_stream_is_the_engines(engine: Engine) -> None:
    assert not zerogpu.on_zero_gpu()
    query = Query(QUESTIONS[0], [], GenerationParams(temperature=0, max_new_tokens=64))
    events = list(zerogpu.gpu_stream(engine)(query))
    assert "".join(e.text for e in events if isinstance(e, AnswerDelta)).strip() == ADAPTER_ANSWER


def test_model_loads_in_the_importing_thread_on_zerogpu_and_in_the_background_elsewhere(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import medcot.engine as engine_module

    threads: list[str] = []
    real_load = engine_module.load_model

    def load_model(*args: object) -> object:
        threads.append(threading.current_thread().name)
        return real_load(*args)

    monkeypatch.setattr(engine_module, "load_model", load_model)
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: True)
    eager = zerogpu.start_engine(Engine(tiny_settings))
    assert eager.ready and threads == [threading.current_thread().name]  # spaces emulates CUDA in this thread only
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: False)
    lazy = zerogpu.start_engine(Engine(tiny_settings))
    assert lazy.wait_until_loaded(60) and lazy.ready and threads[1] != threads[0]


def test_app_imports_spaces_before_anything_that_imports_torch() -> None:
    imports = [node for node in ast.parse(APP.read_text()).body if isinstance(node, ast.Import | ast.ImportFrom)]
    first = imports[0]
    assert isinstance(first, ast.Import) and first.names[0].name == "spaces"


def test_user_errors_inside_the_worker_become_picklable_gr_errors_with_their_message() -> None:
    import pickle

    import gradio as gr

    from medcot.errors import GenerationError

    def failing() -> Iterator[int]:
        yield 1
        raise GenerationError("Generation failed: CUDA out of memory.")

    events = zerogpu.readable_errors(failing())  # type: ignore[arg-type]
    assert next(events) == 1
    with pytest.raises(gr.Error) as raised:
        next(events)
    # spaces pickles the worker's gr.Error back to this process
    assert pickle.loads(pickle.dumps(raised.value)).message == "Generation failed: CUDA out of memory."


# -- GpuEvents -------------------------------------------------------------------------------------------------------


class SlowGpu:
    """A GPU generator as spaces' behaves: each event after `delay`; its close waits for the worker (`close_delay`)."""

    def __init__(self, events: int = 3, delay: float = 0.0, close_delay: float = 0.0) -> None:
        self.events, self.delay, self.close_delay = events, delay, close_delay
        self.started = threading.Event()
        self.closed_in: list[str] = []
        self.slots: list[int] = []

    def __call__(self, slot: int) -> Iterator[int]:
        self.slots.append(slot)
        self.started.set()
        try:
            for i in range(self.events):
                time.sleep(self.delay)
                yield i
        finally:
            time.sleep(self.close_delay)
            self.closed_in.append(threading.current_thread().name)


def test_events_pass_through_in_order_and_the_slot_is_given_back() -> None:
    flags = zerogpu.StopFlags(size=1)
    gpu = SlowGpu()
    assert list(zerogpu.GpuEvents(gpu, threading.Event(), flags)) == [0, 1, 2]
    deadline = time.monotonic() + 5
    while flags.take() == -1 and time.monotonic() < deadline:  # given back once the driving thread is done too
        time.sleep(0.01)
    assert gpu.slots == [0]


def test_a_request_stopped_before_its_turn_never_asks_for_a_gpu() -> None:
    cancel = threading.Event()
    cancel.set()
    gpu = SlowGpu()
    assert list(zerogpu.GpuEvents(gpu, cancel, zerogpu.StopFlags())) == []
    time.sleep(0.1)
    assert not gpu.started.is_set()


def test_stop_while_waiting_ends_the_reader_at_once_and_the_close_runs_in_the_driving_thread() -> None:
    flags = zerogpu.StopFlags()
    cancel = threading.Event()
    gpu = SlowGpu(events=2, delay=2.0, close_delay=0.5)  # the GPU is still being waited for
    events = zerogpu.GpuEvents(gpu, cancel, flags)
    reader = iter(events)
    threading.Timer(0.2, cancel.set).start()
    started = time.monotonic()
    assert list(reader) == []
    assert time.monotonic() - started < 0.2 + 3 * zerogpu.POLL_S
    assert flags.is_set(gpu.slots[0])  # the worker's generation would stop at its next token
    deadline = time.monotonic() + 10
    while not gpu.closed_in and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gpu.closed_in == ["medcot-gpu"]


def test_closing_the_reader_early_stops_the_gpu_generator() -> None:
    gpu = SlowGpu(events=1000, delay=0.01)
    cancel = threading.Event()
    reader = iter(zerogpu.GpuEvents(gpu, cancel, zerogpu.StopFlags()))
    assert next(reader) == 0
    started = time.monotonic()
    reader.close()  # what a garbage-collected or closed stream does: returns at once
    assert time.monotonic() - started < 0.1 and cancel.is_set()
    deadline = time.monotonic() + 5
    while not gpu.closed_in and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gpu.closed_in == ["medcot-gpu"]


def test_a_failure_of_the_gpu_generator_reaches_the_reader() -> None:
    def failing(slot: int) -> Iterator[int]:
        yield 1
        raise RuntimeError("worker error")

    reader = iter(zerogpu.GpuEvents(failing, threading.Event(), zerogpu.StopFlags()))
    assert next(reader) == 1
    with pytest.raises(RuntimeError, match="worker error"):
        next(reader)


def test_stop_flags_are_seen_by_a_forked_process() -> None:
    import multiprocessing

    flags = zerogpu.StopFlags(size=4)
    slot = flags.take()
    seen = multiprocessing.get_context("fork").Value("b", 0)

    def child() -> None:  # the worker's side: a request's cancel event set by the watch over its slot
        cancel, done = threading.Event(), threading.Event()
        threading.Timer(5, done.set).start()
        flags.watch(slot, cancel, done)
        seen.value = 1 if cancel.is_set() else 2

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()  # forked after the flags were made, as spaces forks its workers
    time.sleep(0.2)
    flags.set(slot)
    process.join(10)
    assert seen.value == 1


# -- MeteredRun ------------------------------------------------------------------------------------------------------


def answer_stats(new_tokens: int = 41, seconds: float = 1.1) -> Stats:
    return Stats(100, new_tokens, 20, new_tokens - 20, 0.1, seconds, False, False, False, 0)


def failing_after(*items: object, error: BaseException) -> Iterator[object]:
    yield from items
    raise error


def test_a_run_feeds_the_workers_start_up_and_the_answers_speed_to_the_budget() -> None:
    budget = GpuBudget()
    run = zerogpu.MeteredRun(budget, asked_s=36, max_new_tokens=512)
    finished = Finished(answer_stats())
    items = [zerogpu.WorkerStarted(1.5), AnswerDelta("x"), finished]
    assert list(run.events(iter(items))) == [AnswerDelta("x"), finished]  # WorkerStarted stays here
    figures = budget.figures()
    assert figures.measured and figures.startup_s == 1.5 and math.isclose(figures.seconds_per_token, 0.025)


def test_spaces_refusals_come_out_as_plain_text_with_spaces_title() -> None:
    link = '<a href="https://huggingface.co/join">Create a free account</a>'
    message = html_string(f"No GPU was available after 60s. {link}", "No GPU ... [text](https://example.org)")
    run = zerogpu.MeteredRun(GpuBudget(), 36, 512)
    with pytest.raises(gr.Error) as raised:
        list(run.events(failing_after(error=spaces_error("ZeroGPU queue timeout", message, html=True))))
    assert raised.value.message == "No GPU ... text (https://example.org)"  # spaces' text form of its HTML
    assert raised.value.title == "ZeroGPU queue timeout" and type(raised.value) is gr.Error


def test_a_worker_killed_at_its_duration_reads_as_cut_and_raises_the_next_ask() -> None:
    budget = GpuBudget()
    budget.observe_startup(0.5)
    for _ in range(5):
        budget.observe_answer(answer_stats())
    asked = budget.seconds_for(512)
    run = zerogpu.MeteredRun(budget, asked, 512)
    run.CUT_FRACTION = 0.0  # held "long enough" at once
    aborted = spaces_error(zerogpu.SPACES_WORKER_ERROR, zerogpu.SPACES_WORKER_ABORTED)
    with pytest.raises(gr.Error) as raised:
        list(run.events(failing_after(zerogpu.WorkerStarted(None), error=aborted)))
    assert raised.value.message == CUT_OFF.format(asked=asked) and raised.value.title == "GPU time ran out"
    assert budget.seconds_for(512) >= asked  # held_s / 512 a token at least; a real cut holds about `asked`


def test_a_worker_that_died_early_or_failed_reads_as_such() -> None:
    aborted = spaces_error(zerogpu.SPACES_WORKER_ERROR, zerogpu.SPACES_WORKER_ABORTED)
    with pytest.raises(gr.Error) as raised:
        list(zerogpu.MeteredRun(GpuBudget(), 36, 512).events(failing_after(error=aborted)))
    assert raised.value.message == "The GPU stopped while answering. Please ask again."
    class_name = spaces_error(zerogpu.SPACES_WORKER_ERROR, "ZeroDivisionError")  # a non-gr.Error in the worker
    with pytest.raises(gr.Error) as raised:
        list(zerogpu.MeteredRun(GpuBudget(), 36, 512).events(failing_after(error=class_name)))
    assert raised.value.message == WORKER_FAILED and "Error" not in raised.value.message
    own = gr.Error("Generation failed: CUDA out of memory.", print_exception=False)  # readable_errors' in the worker
    with pytest.raises(gr.Error) as raised:
        list(zerogpu.MeteredRun(GpuBudget(), 36, 512).events(failing_after(error=own)))
    assert raised.value is own


def test_a_failure_to_schedule_reads_without_a_class_name() -> None:
    failure = RuntimeError("ZeroGPU API /schedule error: 500 (Internal Server Error)")
    with pytest.raises(gr.Error) as raised:
        list(zerogpu.MeteredRun(GpuBudget(), 36, 512).events(failing_after(error=failure)))
    assert raised.value.message == (
        "ZeroGPU could not give this answer a GPU (ZeroGPU API /schedule error: 500 (Internal Server Error)). "
        "Please try again in a moment."
    )


def test_a_forked_worker_reports_its_start_up_once() -> None:
    import multiprocessing

    reported = multiprocessing.get_context("fork").Array("d", [-1.0, -1.0])

    def worker() -> None:
        time.sleep(0.2)
        first, second = zerogpu.worker_started(), zerogpu.worker_started()
        reported[0] = first.startup_s if first.startup_s is not None else -2.0
        reported[1] = second.startup_s if second.startup_s is not None else -2.0

    process = multiprocessing.get_context("fork").Process(target=worker)
    process.start()
    process.join(10)
    assert 0.2 <= reported[0] < 5 and reported[1] == -2.0  # the second request of a worker: reused, no start-up
