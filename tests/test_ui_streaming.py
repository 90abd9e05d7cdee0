"""medcot.ui.streaming: the first text at once, later deltas coalesced, a closed reply stopping generation, and API
clients asking while the model loads waiting for it, up to MEDCOT_LOAD_WAIT_S."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from medcot.config import Settings
from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats
from medcot.request import Query
from medcot.ui.layout import build_demo, launch_kwargs, queue
from tests.helpers.serving import free_port
from tests.helpers.tiny import ADAPTER_ANSWER, QUESTIONS
from tests.helpers.ui_calls import GREEDY, handler, replies


def test_first_text_is_sent_at_once_and_later_deltas_are_coalesced(engine: Engine) -> None:
    """Time to first token: the first delta is not held back for the update interval; the ones after it are."""
    release = threading.Event()

    def stream(query: Query, cancel: threading.Event) -> Iterator[Any]:
        yield ReasoningDelta("Fluid")
        yield ReasoningDelta(" overload")  # arrives within the interval: coalesced with what follows
        release.wait(5)
        yield ReasoningDone(1.0)
        yield AnswerDelta("Diuretic.")  # coalesced too, and sent when the stream ends

    demo = build_demo(engine, stream=stream)

    async def run() -> tuple[list[str], list[str]]:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)  # the empty reply
        first = await asyncio.wait_for(anext(updates), 2)  # must come while the stream is blocked
        release.set()
        rest = await replies(updates)
        return [m.content for m in first[0]], [m.content for m in rest[-1][0]]

    first, final = asyncio.run(run())
    assert first == ["Fluid"]
    assert final[:2] == ["Fluid overload", "Diuretic."]


def test_held_text_goes_out_when_the_stream_stalls(engine: Engine) -> None:
    """Text coalesced into the next update is sent after the update interval even if no further event comes."""
    release = threading.Event()

    def stream(query: Query, cancel: threading.Event) -> Iterator[Any]:
        yield ReasoningDelta("Fluid")
        yield ReasoningDelta(" overload")  # held: it comes within the interval of the first
        release.wait(10)  # a stalled stream (a slow token)
        yield Finished(Stats(10, 2, 2, 0, 0.1, 0.2, False, False, False, 0))

    demo = build_demo(engine, stream=stream)

    async def run() -> list[str]:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)  # the empty reply
        await anext(updates)  # the first text, at once
        held = await asyncio.wait_for(anext(updates), 2)  # while the stream is still stalled
        release.set()
        await replies(updates)
        return [m.content for m in held[0]]

    assert asyncio.run(run())[:1] == ["Fluid overload"]


def test_generation_starts_while_the_empty_reply_goes_out(engine: Engine) -> None:
    """Time to first token: the stream is started when the empty reply is yielded, not when Gradio asks for more."""
    started = threading.Event()

    def stream(query: Query, cancel: threading.Event) -> Iterator[Any]:
        started.set()
        yield AnswerDelta("Diuretic.")

    demo = build_demo(engine, stream=stream)

    async def run() -> tuple[bool, list[Any]]:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)  # the empty reply: a pending reasoning accordion
        began = await asyncio.to_thread(started.wait, 2)  # nothing asks for the next update meanwhile
        return began, await replies(updates)

    began, rest = asyncio.run(run())
    assert began, "the stream did not start until the next update was asked for"
    assert [m.content for m in rest[-1][0]] == ["Diuretic."]


def test_closing_the_reply_before_the_first_token_cancels_the_generation(engine: Engine) -> None:
    """A Stop or a closed tab right after the empty reply: the generation that already started is told to stop."""
    started, cancels = threading.Event(), []

    def stream(query: Query, cancel: threading.Event) -> Iterator[Any]:
        cancels.append(cancel)
        started.set()
        cancel.wait(10)  # a long prefill that checks the cancel event
        yield AnswerDelta("too late")

    demo = build_demo(engine, stream=stream)

    async def run() -> float:
        updates = handler(demo, "respond")(QUESTIONS[0], [], *GREEDY, None)
        await anext(updates)
        assert await asyncio.to_thread(started.wait, 2), "the stream did not start with the empty reply"
        began = time.monotonic()
        await asyncio.wait_for(updates.aclose(), 5)
        return time.monotonic() - began

    seconds = asyncio.run(run())
    assert cancels and cancels[0].is_set()
    assert seconds < 2


@pytest.mark.timeout(240)
def test_api_clients_wait_for_the_loading_model_and_get_their_answer(tiny_settings: Settings) -> None:
    loading = Engine(replace(tiny_settings, load_wait_s=120))
    demo = queue(build_demo(loading), loading)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **launch_kwargs())
    try:
        client = Client(url, verbose=False)
        asked = client.submit(QUESTIONS[0], *GREEDY, api_name="/ask")
        chatted = client.submit(QUESTIONS[0], *GREEDY, api_name="/chat")
        time.sleep(2)
        assert not asked.done() and not chatted.done()  # waiting, not refused
        threading.Thread(target=loading.load, daemon=True).start()
        assert asked.result(timeout=120) == ADAPTER_ANSWER
        final = chatted.result(timeout=120)
        assert ADAPTER_ANSWER in str(final)
    finally:
        demo.close()


@pytest.mark.timeout(240)
def test_api_clients_get_a_readable_still_loading_message_after_a_bounded_wait(tiny_settings: Settings) -> None:
    loading = Engine(replace(tiny_settings, load_wait_s=1))  # never loaded
    demo = queue(build_demo(loading), loading)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **launch_kwargs())
    try:
        client = Client(url, verbose=False)
        for endpoint in ("/ask", "/chat"):
            started = time.monotonic()
            with pytest.raises(AppError, match="still loading"):
                client.predict(QUESTIONS[0], *GREEDY, api_name=endpoint)
            assert 1 <= time.monotonic() - started < 60
    finally:
        demo.close()
