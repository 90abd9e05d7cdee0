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
