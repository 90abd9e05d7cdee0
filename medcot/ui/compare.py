"""The base-model comparison: its controls, and the relay that carries the base answer to its column."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from medcot.engine import Engine

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
    """Carries the base model's answer from the chat handler to the base column of the same page session.

    The chat handler is ChatInterface's `/chat` endpoint, whose inputs and outputs API clients rely on, so it cannot
    gain the second column as an output. The column's own handler, started by the same submit, shows what the chat
    handler sends here. Sessions with the comparison switched on are remembered from the checkbox's change events.

    The two handlers start in either order. A channel the column has not taken yet waits for it, until the next
    question's channel replaces it or, once the chat handler is done with it, for CLOSED_GRACE_S; a column handler
    gives up when a newer one starts for its session (its question's chat handler never ran) or after a timeout.
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
                channel, closed = pending
                if closed and time.monotonic() - closed[0] > self.CLOSED_GRACE_S:
                    del self._pending[session]  # an old question's, whose column never came
                else:
                    del self._pending[session]
                    return channel
            await asyncio.sleep(0.05)
        return None

    async def items(self, channel: asyncio.Queue[Any]) -> AsyncIterator[Any]:
        """What the chat handler puts on ``channel``, up to its END."""
        while (item := await channel.get()) is not self.END:
            yield item
