"""medcot.ui.gradio_internals: what the app takes from Gradio without a public API still works in the installed
Gradio; each failure names the piece, the version it was checked against and where to look."""

from __future__ import annotations

import gradio as gr

from medcot.engine import Engine
from medcot.ui.gradio_internals import GRADIO_CHECKED, chat_submits, set_idle_poll
from medcot.ui.layout import QUEUE_POLL_S, build_demo, queue

WHERE = f"Gradio {gr.__version__} (checked against {GRADIO_CHECKED}); see medcot/ui/gradio_internals.py"


async def echo(message: str, history: list, temperature: float | None = None):
    yield message


def test_chat_interface_still_names_its_four_ways_of_asking() -> None:
    with gr.Blocks() as demo:
        chat = gr.ChatInterface(echo, examples=["a"], run_examples_on_click=True)
    submits = chat_submits(demo, chat)
    assert len(submits) == 4, f"{WHERE}: ChatInterface's chat events (_submit_fn) are now {len(submits)}, not 4"
    assert all(hasattr(submit, "failure") for submit in submits), f"{WHERE}: a Dependency has no .failure()"


def test_every_way_of_asking_puts_the_page_back_when_the_answer_fails(engine: Engine) -> None:
    """The textbox, an example's click, Retry and an option's click each run ChatInterface's chat handler in an event
    of their own; each needs its own .failure() listener, or a refusal there leaves the page unable to ask again."""
    demo = build_demo(engine)
    submits = {index for index, fn in demo.fns.items() if getattr(fn.fn, "__name__", "") == "_submit_fn"}
    assert len(submits) == 4, f"{WHERE}: ChatInterface's ways of asking changed: check each one fails gracefully"
    restoring = {
        fn.trigger_after
        for fn in demo.fns.values()
        if getattr(fn.fn, "__name__", "") == "restore_after_failure" and fn.trigger_only_on_failure
    }
    assert restoring == submits


def test_the_idle_queue_polls_every_10_ms(engine: Engine) -> None:
    demo = queue(build_demo(engine), engine)
    assert demo._queue.sleep_when_free == QUEUE_POLL_S == 0.01, f"{WHERE}: Queue.sleep_when_free is not used"
    set_idle_poll(demo, 0.02)
    assert demo._queue.sleep_when_free == 0.02
