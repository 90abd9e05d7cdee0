"""medcot.ui.compare: the compare controls and the relay that carries the base model's answer to its column."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from medcot.config import Settings
from medcot.engine import Engine
from medcot.events import AnswerDelta
from medcot.request import Query
from medcot.ui.compare import BaseRelay, compare_controls
from medcot.ui.layout import build_demo
from medcot.ui.rendering import WAITING_FOR_ADAPTER
from medcot.ui.stats_line import STATS_PREFIX
from tests.helpers.tiny import ADAPTER_ANSWER, BASE_OUTPUT, QUESTIONS
from tests.helpers.ui_calls import GREEDY, content, handler, replies


def test_compare_controls_follow_what_is_loaded(engine: Engine, tiny_settings: Settings) -> None:

    assert compare_controls(engine)[0] == {"interactive": True}
    base_only = Engine(replace(tiny_settings, adapter=None), replace(engine.loaded, kind="base", base_delta=None))
    state, note = compare_controls(base_only)
    assert state == {"interactive": False, "value": False} and "MEDCOT_ADAPTER is empty" in note
    assert "once the model has loaded" in compare_controls(Engine(tiny_settings))[1]


def test_relay_hands_each_question_s_channel_to_its_column() -> None:
    async def scenario() -> list[Any]:
        relay = BaseRelay()
        seen: list[Any] = []
        # The column first, then the chat handler.
        waiting = asyncio.create_task(relay.take("s", timeout=5))
        await asyncio.sleep(0.1)
        channel = relay.open("s")
        channel.put_nowait("event")
        relay.close("s", channel)
        taken = await waiting
        seen += [await taken.get(), await taken.get()]
        # The chat handler done before its column started (a refused question): the column still gets it.
        early = relay.open("s")
        relay.close("s", early)
        seen.append(await relay.take("s", timeout=1) is early)
        # A channel no column took is not handed to a later question's column.
        stale = relay.open("s")
        relay.close("s", stale)
        relay._pending["s"][1][0] -= BaseRelay.CLOSED_GRACE_S + 1
        seen.append(await relay.take("s", timeout=0.2))
        # A column whose chat handler never ran gives way to the next question's column.
        orphan = asyncio.create_task(relay.take("s", timeout=5))
        await asyncio.sleep(0.1)
        current = asyncio.create_task(relay.take("s", timeout=5))
        await asyncio.sleep(0.1)
        fresh = relay.open("s")
        seen += [await orphan, await current is fresh]
        return seen

    assert asyncio.run(scenario()) == ["event", BaseRelay.END, True, None, None, True]


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
