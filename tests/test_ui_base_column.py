"""medcot.ui.base_column: the base model's answer relayed from the chat handler to its column, as build_demo wires
them."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from medcot.engine import Engine
from medcot.events import AnswerDelta
from medcot.request import Query
from medcot.ui.layout import build_demo
from medcot.ui.rendering import WAITING_FOR_ADAPTER
from medcot.ui.stats_line import STATS_PREFIX
from tests.helpers.tiny import ADAPTER_ANSWER, BASE_OUTPUT, QUESTIONS
from tests.helpers.ui_calls import GREEDY, content, handler, replies


def test_compare_relays_the_base_answer_to_its_column(unmerged_engine: Engine) -> None:
    """Without a browser: the chat handler and the base column's handler of one session, as a submit starts them."""
    demo = build_demo(unmerged_engine)
    request = SimpleNamespace(session_hash="session-1")
    handler(demo, "set_compare")(True, request)

    async def submit(question: str) -> tuple[list[Any], list[Any]]:
        column = asyncio.create_task(replies(handler(demo, "show_base")([], True, request)))
        chat = await replies(handler(demo, "respond")(question, [], *GREEDY, request))
        return chat, await column

    chat, column = asyncio.run(submit(QUESTIONS[0]))
    response, _ = chat[-1]  # ChatInterface's wrapper yields (the reply's messages, the whole history)
    assert [m.content for m in response][1] == ADAPTER_ANSWER
    final = [content(m) for m in column[-1]]
    assert final[:2] == [QUESTIONS[0], BASE_OUTPUT] and final[2].startswith(STATS_PREFIX) and len(final) == 3
    assert [content(m) for m in column[0]] == [QUESTIONS[0], WAITING_FOR_ADAPTER]

    # A refused question leaves the base column as it was.
    async def refused() -> list[Any]:
        shown = asyncio.create_task(replies(handler(demo, "show_base")(column[-1], True, request)))
        with pytest.raises(gr.Error, match="Please type a question"):
            await replies(handler(demo, "respond")("   ", [], *GREEDY, request))
        return await shown

    assert [type(update).__name__ for update in asyncio.run(refused())] == ["dict"]  # one gr.skip()


def test_base_column_sends_held_text_when_the_base_stream_stalls(unmerged_engine: Engine) -> None:
    release = threading.Event()

    def stream(query: Query, cancel: threading.Event) -> Iterator[Any]:
        if query.use_adapter:
            yield AnswerDelta("Diuretic.")
            return
        yield AnswerDelta("Base")
        yield AnswerDelta(" answer")  # held: it comes within the interval of the first
        release.wait(10)  # a stalled stream (a slow token)

    demo = build_demo(unmerged_engine, stream=stream)
    request = SimpleNamespace(session_hash="session-2")
    handler(demo, "set_compare")(True, request)

    async def run() -> list[str]:
        column = handler(demo, "show_base")([], True, request)
        chat = asyncio.create_task(replies(handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, request)))
        shown: list[str] = []
        while "Base answer" not in shown:  # the held text arrives while the base stream is still stalled
            shown = [content(m) for m in await asyncio.wait_for(anext(column), 2)]
        release.set()
        await chat
        await replies(column)
        return shown

    assert asyncio.run(run())[:2] == [QUESTIONS[0], "Base answer"]


def test_base_column_does_nothing_when_compare_is_off(unmerged_engine: Engine) -> None:
    demo = build_demo(unmerged_engine)
    updates = asyncio.run(replies(handler(demo, "show_base")([], False, SimpleNamespace(session_hash="s"))))
    assert len(updates) == 1 and updates[0] == gr.skip()
