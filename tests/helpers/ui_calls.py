"""Calling the UI's handlers without a browser: the sliders' values, a request, and a handler's updates."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

GREEDY = (64, 0.0, 0.95, 64, 1.0)  # max_new_tokens, temperature, top_p, top_k, repetition_penalty


def request(session: str = "s1", **query: str) -> Any:
    """What Gradio passes as gr.Request: the session and the page's query parameters."""
    return SimpleNamespace(session_hash=session, query_params=query)


async def replies(stream: Any) -> list[Any]:
    """Every update a streaming handler yields."""
    return [update async for update in stream]


def handler(demo: gr.Blocks, name: str) -> Any:
    """The demo's event handler of that name, as build_demo wired it."""
    return next(fn.fn for fn in demo.fns.values() if fn.name == name)


def content(message: Any) -> str:
    return message["content"] if isinstance(message, dict) else message.content


def expected_feedback(engine: Any, rating: str, generation: dict[str, Any]) -> dict[str, Any]:
    """The feedback record (medcot.ui.feedback) of a rating on the tiny adapter's answer to QUESTIONS[0], less its
    feedback_id and time."""
    from tiny import ADAPTER_ANSWER, ADAPTER_REASONING, QUESTIONS

    from medcot import __version__
    from medcot.ui.history import models_of

    return {
        "format": "medcot-feedback",
        "format_version": 1,
        "rating": rating,
        "question": QUESTIONS[0],
        "reasoning": ADAPTER_REASONING,
        "reasoning_note": "'reasoning' is the model's chain of thought as it wrote it: not an explanation anyone "
        "checked.",
        "answer": ADAPTER_ANSWER,
        "notes": [],
        "models": models_of(engine),
        "generation": generation,
        "app": {"name": "MedCoT Space", "version": __version__},
    }
