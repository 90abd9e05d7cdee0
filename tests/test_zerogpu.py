"""ZeroGPU glue: where the model loads, the decode step compiled ahead of time through spaces.aoti_* (here on the
CPU: spaces.GPU runs its function in this process off ZeroGPU), and MeteredRun's measurements and readable errors
(spaces' own errors, built by spaces' own function).

spaces itself runs in tests/test_zerogpu_space.py (app.py under the real runtime); here only the glue's own logic,
with plain generators standing in for the one spaces returns.
"""

from __future__ import annotations

import ast
import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest
import torch
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
    import medcot.load_state

    threads: list[str] = []
    real_load = medcot.load_state.load_backend

    def load_backend(*args: object) -> object:
        threads.append(threading.current_thread().name)
        return real_load(*args)

    monkeypatch.setattr(medcot.load_state, "load_backend", load_backend)
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: True)
    tiny_settings = replace(tiny_settings, decode="generate")  # no compile ahead of time (tested below)
    eager = zerogpu.start_engine(Engine(tiny_settings))
    assert eager.ready and threads == [threading.current_thread().name]  # spaces emulates CUDA in this thread only
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: False)
    lazy = zerogpu.start_engine(Engine(tiny_settings))
    assert lazy.wait_until_loaded(60) and lazy.ready and threads[1] != threads[0]


# Two AOTInductor builds (the fine-tune's and the base's program) take ~1 min on 2 shared cores.
@pytest.mark.slow
def test_the_step_compiled_ahead_through_spaces_answers_as_eager_and_loads_its_package_once(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_spaces_torch_glue(monkeypatch)
    settings = replace(tiny_settings, decode="static")
    eager = Engine(settings).load()
    greedy = GenerationParams(temperature=0, max_new_tokens=48)
    questions = [Query(QUESTIONS[0], [], greedy), Query(QUESTIONS[1], [], greedy, use_adapter=False)]
    expected = [answer_text(eager.stream(query)) for query in questions]
    loads: list[object] = []
    real_load = torch._inductor.aoti_load_package

    def load_package(*args: object, **kwargs: object) -> object:
        loads.append(args[0])
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch._inductor, "aoti_load_package", load_package)
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: True)
    engine = zerogpu.start_engine(Engine(replace(tiny_settings, decode="auto")))
    generator = engine.backend.static  # type: ignore[union-attr]
    assert generator.mode == "aoti" and set(generator.step.ready) == {False, True}, generator.step.status
    loads.clear()  # the checks at compile time loaded each package once
    for _ in range(2):  # each answer in a generation thread of its own, as in a worker
        assert [answer_text(zerogpu.gpu_stream(engine)(query)) for query in questions] == expected
    assert len(loads) == 2 and generator.step.ready  # one load per program, none fell back to eager


def test_a_failed_compile_ahead_of_time_leaves_generation_as_it_was_with_one_log_line(
    tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_export(*args: object) -> None:
        raise RuntimeError("Could not guard on data-dependent expression\nmore details")

    monkeypatch.setattr(zerogpu, "export_step", no_export)
    monkeypatch.setattr(zerogpu, "on_zero_gpu", lambda: True)
    with caplog.at_level(logging.INFO, logger="medcot.zerogpu"):
        engine = zerogpu.start_engine(Engine(replace(tiny_settings, decode="auto")))
    assert engine.ready and engine.backend.static.mode == "static"  # type: ignore[union-attr]
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == [
        "ZeroGPU: the decode step is not compiled ahead of time, the static step (eager) serves: "
        "RuntimeError: Could not guard on data-dependent expression"
    ]
    answer = answer_text(zerogpu.gpu_stream(engine)(Query(QUESTIONS[0], [], GenerationParams(temperature=0))))
    assert answer.strip() == ADAPTER_ANSWER


def import_spaces_torch_glue(monkeypatch: pytest.MonkeyPatch) -> None:
    """spaces.aoti_* live in spaces' torch glue, whose import reads what a CPU build of torch lacks: a CUDA version
    and torch._C._cuda_init (stood in for as tests/helpers/zerogpu_space.py does, for the import only)."""
    with monkeypatch.context() as patched:
        patched.setattr(torch.version, "cuda", "12.8")
        patched.setattr(torch._C, "_cuda_init", lambda: None, raising=False)
        import spaces.zero.torch.aoti  # noqa: F401


def answer_text(events: Iterator[object]) -> str:
    return "".join(event.text for event in events if isinstance(event, AnswerDelta))


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
