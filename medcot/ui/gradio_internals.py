"""Everything the app needs from Gradio that Gradio 6.31 offers no public API for, in one place.

Checked against GRADIO_CHECKED (the Space's ``sdk_version``). tests/test_ui_gradio_internals.py fails with a message
naming the piece that broke when an upgrade changes one of them; each says why no public API does it.
"""

from __future__ import annotations

import gradio as gr

GRADIO_CHECKED = "6.31.0"


def chat_submits(demo: gr.Blocks, chat: gr.ChatInterface) -> list[gr.events.Dependency]:
    """ChatInterface's page events that run the chat handler: the textbox's submit, an example's click, Retry and an
    option's click, for ``.failure()`` listeners.

    Gradio 6.31's ChatInterface keeps those events to itself (no attribute holds them) and names their function
    ``_submit_fn``; its frontend runs only ``.failure()`` listeners once a handler raised (ChatInterface's own
    follow-ups, which re-enable the textbox, are ``.then()``/``.success()`` ones that never run). The API's /chat is
    another event and keeps its errors.
    """
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
