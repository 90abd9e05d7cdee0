"""The base-model comparison: its controls, the relay that carries the base answer to its column, and the column:
the base answer run from the chat handler (BaseColumn.run), relayed, and shown by the column's own handler."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import gradio as gr

from medcot.engine import Engine
from medcot.errors import UserError
from medcot.request import Query, StreamFn
from medcot.ui.answers import AnswerRecord, AnswerStore, session_of
from medcot.ui.rendering import (
    NOT_RUN_MARK,
    STOPPED_MARK,
    WAITING_FOR_ADAPTER,
    answer_messages,
    as_dict,
    ending_message,
    mark_stopped,
)
from medcot.ui.streaming import UPDATE_INTERVAL_S, CoalescedEvents, iterate_in_thread

log = logging.getLogger(__name__)

COMPARE_LABEL = "Compare with the base model"
COMPARE_NOTE = (
    "The base model answers the same prompt with the adapter switched off, after the fine-tuned answer: one copy "
    "of the weights serves both, so the two never run at once."
)
SERVER_COMPARE_NOTE = (
    "The model server answers the same prompt with its base model beside the fine-tuned answer, at the same time."
)
# How long the base column waits for its chat handler to start (it may queue behind other users' requests).
RELAY_WAIT_S = 600.0


def compare_controls(engine: Engine) -> tuple[dict[str, Any], str]:
    """The compare checkbox's state and the note beside it, for what the engine has loaded (or not yet)."""
    reason = engine.compare_unavailable()
    if reason is None:
        return {"interactive": True}, SERVER_COMPARE_NOTE if engine.base_runs_beside else COMPARE_NOTE
    if engine.backend is None and engine.error is None:
        return {"interactive": False, "value": False}, "Available once the model has loaded, if an adapter is loaded."
    return {"interactive": False, "value": False}, f"Not available: {reason}"


class BaseRelay:
    """Carries the base model's answer from the chat handler (ChatInterface's /chat, whose outputs API clients rely
    on, so no second column there) to the base column's own handler, started by the same submit, per page session.

    The two start in either order. An untaken channel waits until the next question's replaces it or, once closed,
    for CLOSED_GRACE_S; a column handler gives up when a newer one starts for its session, or after a timeout.
    """

    END = object()
    CLOSED_GRACE_S = 10.0

    def __init__(self) -> None:
        self.comparing: set[str] = set()
        self._pending: dict[str, tuple[asyncio.Queue[Any], list[float]]] = {}  # channel, [closed at] once closed
        self._takers: dict[str, int] = {}

    def set_compare(self, session: str | None, on: bool) -> None:
        if session:
            (self.comparing.add if on else self.comparing.discard)(session)

    def forget(self, session: str | None) -> None:
        for registry in (self._pending, self._takers):
            registry.pop(session or "", None)
        self.comparing.discard(session or "")

    def open(self, session: str) -> asyncio.Queue[Any]:
        channel: asyncio.Queue[Any] = asyncio.Queue()
        self._pending[session] = (channel, [])  # replaces one no column took: that question is over
        return channel

    def close(self, session: str, channel: asyncio.Queue[Any]) -> None:
        channel.put_nowait(self.END)
        pending = self._pending.get(session)
        if pending is not None and pending[0] is channel:
            pending[1].append(time.monotonic())

    async def take(self, session: str, timeout: float = RELAY_WAIT_S) -> asyncio.Queue[Any] | None:
        """The channel of the session's current question, or None (superseded, or nothing after ``timeout``)."""
        ticket = self._takers[session] = self._takers.get(session, 0) + 1
        deadline = time.monotonic() + timeout
        while self._takers.get(session) == ticket and time.monotonic() < deadline:
            pending = self._pending.get(session)
            if pending is not None:
                del self._pending[session]
                channel, closed = pending
                if not closed or time.monotonic() - closed[0] <= self.CLOSED_GRACE_S:
                    return channel  # else an old question's, whose column never came
            await asyncio.sleep(0.05)
        return None

    async def items(self, channel: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        """What the chat handler puts on ``channel``, up to its END."""
        while (item := await channel.get()) is not self.END:
            yield item


def error_text(exc: Exception) -> str:
    return str(exc.message) if isinstance(exc, gr.Error) else str(exc)


class BaseColumn:
    """The base column's two halves: ``run`` (in the chat handler) and ``show_base`` (the column's own handler)."""

    def __init__(
        self,
        engine: Engine,
        stream: StreamFn,
        relay: BaseRelay,
        answers: AnswerStore,
        shows_reasoning: Callable[[str | None], bool],
    ) -> None:
        self.engine, self.stream, self.relay = engine, stream, relay
        self.answers, self.shows_reasoning = answers, shows_reasoning

    async def run(self, channel: asyncio.Queue[Any], query: Query) -> None:
        """The same query through the base model (adapter off); its events go to the base column."""
        cancel = threading.Event()  # its own: the adapter stream's event is set once that stream ends
        channel.put_nowait(("start", None))
        base = replace(query, use_adapter=False)
        try:
            async for event in iterate_in_thread(self.stream(base, cancel), cancel):
                channel.put_nowait(event)
        except (UserError, gr.Error) as exc:
            channel.put_nowait(("error", error_text(exc)))
        except Exception as exc:  # the fine-tuned answer is already shown: report this one in its column only
            log.exception("base-model generation failed")
            channel.put_nowait(("error", f"Something went wrong while answering ({type(exc).__name__})."))

    async def show_base(
        self, base_history: list[dict[str, Any]] | None, compare: bool, request: gr.Request
    ) -> AsyncIterator[Any]:
        """The base column: the compared question, then the base model's answer as the chat handler relays it."""
        session = session_of(request)
        if not compare or not session or not self.engine.can_compare:
            yield gr.skip()
            return
        channel = await self.relay.take(session)
        if channel is None:
            yield gr.skip()
            return
        self.relay.set_compare(session, True)  # the checkbox said so at submit, whatever its change event's timing
        shown = list(base_history or [])
        record: AnswerRecord | None = None  # set once the question came: it was not refused
        streaming = False  # the base answer started (the "Show reasoning" switch read then) and did not fail
        show_reasoning = True
        tail: list[Any] = []
        items = CoalescedEvents(self.relay.items(channel), UPDATE_INTERVAL_S)
        try:
            async for batch in items:
                for item in batch:
                    kind = item[0] if isinstance(item, tuple) else None
                    if kind == "question":
                        record = self.answers.add(session, AnswerRecord(item[1], item[2], use_adapter=False))
                        shown.append(gr.ChatMessage(role="user", content=item[1]))
                        tail = [gr.ChatMessage(content=WAITING_FOR_ADAPTER)]
                    elif record is None:
                        continue  # the question was refused: the fine-tuned column says why, this one stays as it was
                    elif kind == "start":
                        streaming = True
                        show_reasoning = self.shows_reasoning(session)
                        tail = answer_messages(record, show_reasoning)
                    elif kind == "error":
                        record.failure = f"The base model did not answer: {item[1]}"
                        shown_so_far = answer_messages(record, show_reasoning) if streaming else []
                        tail = [*shown_so_far, ending_message(f"⚠️ {item[1]}", record)]
                        streaming = False
                    elif streaming:
                        record.apply(item)
                        tail = answer_messages(record, show_reasoning)
                if record is not None:
                    yield [*shown, *tail]
        finally:
            await items.aclose()
        if record is None:
            yield gr.skip()
            return
        if tail and tail[-1].content == WAITING_FOR_ADAPTER:
            record.failure = "The base model did not answer: the fine-tuned answer did not complete."
            tail = [ending_message(NOT_RUN_MARK, record)]
        elif streaming and not record.finished:
            record.stopped = True
            tail = [*answer_messages(record, show_reasoning), ending_message(STOPPED_MARK, record)]
        yield mark_stopped([as_dict(m) for m in [*shown, *tail]])
