"""The base model's answer beside the fine-tuned one: run from the chat handler, relayed (medcot.ui.compare) and
shown in the base column by its own handler."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import gradio as gr

from medcot.engine import Engine
from medcot.errors import UserError
from medcot.request import Query, StreamFn
from medcot.ui.answers import AnswerRecord, AnswerStore, session_of
from medcot.ui.compare import BaseRelay
from medcot.ui.rendering import (
    NOT_RUN_MARK,
    STOPPED_MARK,
    WAITING_FOR_ADAPTER,
    ChatRenderer,
    as_dict,
    ending_message,
    mark_stopped,
)
from medcot.ui.streaming import UPDATE_INTERVAL_S, CoalescedEvents, iterate_in_thread

log = logging.getLogger(__name__)


def error_text(exc: Exception) -> str:
    return str(exc.message) if isinstance(exc, gr.Error) else str(exc)


class BaseColumn:
    """The base column's two halves: ``run`` (in the chat handler) and ``show_base`` (the column's handler)."""

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
        view: ChatRenderer | None = None
        record: AnswerRecord | None = None  # set once the question came: it was not refused
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
                        view = ChatRenderer(record, self.shows_reasoning(session))
                        tail = view.messages()
                    elif kind == "error":
                        record.failure = f"The base model did not answer: {item[1]}"
                        tail = [*(view.messages() if view else []), ending_message(f"⚠️ {item[1]}", record)]
                        view = None
                    elif view is not None:
                        view.apply(item)
                        tail = view.messages()
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
        elif view is not None and not record.finished:
            record.stopped = True
            tail = [*view.messages(), ending_message(STOPPED_MARK, record)]
        yield mark_stopped([as_dict(m) for m in [*shown, *tail]])
