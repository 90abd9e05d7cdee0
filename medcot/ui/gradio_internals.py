"""Everything the app needs from Gradio that Gradio 6.31 offers no public API for, in one place, checked against
GRADIO_CHECKED (the Space's ``sdk_version``) by tests/test_ui_gradio_internals.py."""

from __future__ import annotations

import gradio as gr

GRADIO_CHECKED = "6.31.0"


def chat_submits(demo: gr.Blocks, chat: gr.ChatInterface) -> list[gr.events.Dependency]:
    """ChatInterface's page events that run the chat handler (submit, an example, Retry, an option), for
    ``.failure()`` listeners: ChatInterface keeps them to itself (their function is ``_submit_fn``), and after an
    error only ``.failure()`` ones run, not its own follow-ups that re-enable the textbox."""
    return [
        gr.events.Dependency(chat.textbox, {}, index, None)
        for index, fn in demo.fns.items()
        if getattr(fn.fn, "__name__", "") == "_submit_fn"
    ]


def set_idle_poll(demo: gr.Blocks, seconds: float) -> None:
    """How often the idle queue looks for new events (Gradio: every 1 ms, ``Queue.sleep_when_free``; no setting)."""
    if not hasattr(demo._queue, "sleep_when_free"):
        raise AttributeError("gradio's Queue has no sleep_when_free any more: see medcot/ui/gradio_internals.py")
    demo._queue.sleep_when_free = seconds
