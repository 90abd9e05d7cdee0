"""What Stop shows: the stopped answer's stats, which Gradio's cancellation keeps from the chat handler.

On Stop, Gradio cancels the chat handler at once; the engine ends within a token and then yields the answer's
Finished (its stats, marked stopped), which the stream plumbing still reads (medcot.ui.streaming) and hands here.
The Stop handler waits a moment for it and shows it under the stopped answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from medcot.events import Finished
from medcot.ui.answers import AnswerRecord

# How long Stop waits for the stream's Finished: the engine ends within a token (~30 ms on 2 cores).
STOP_STATS_WAIT_S = 3.0


class FinishedAnswers:
    """Each page session's latest answer: its stream's Finished handed to its record, and whether it has come."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrived: dict[str, threading.Event] = {}

    def begin(self, session: str | None, record: AnswerRecord) -> Callable[[Finished], None] | None:
        """A new answer of ``session``: the callback its stream's Finished goes to (None without a session)."""
        if not session:
            return None
        arrived = threading.Event()

        def finished(event: Finished) -> None:
            record.apply(event)
            arrived.set()

        with self._lock:
            self._arrived[session] = arrived
        return finished

    def clear(self, session: str | None) -> None:
        """A question not answered yet (waiting for the model): a Stop now has no stats to wait for."""
        with self._lock:
            self._arrived.pop(session or "", None)

    def wait(self, session: str | None, timeout: float = STOP_STATS_WAIT_S) -> None:
        """Until the session's latest answer has its Finished (in its record), for at most ``timeout``."""
        with self._lock:
            arrived = self._arrived.get(session or "")
        if arrived is not None:
            arrived.wait(timeout)

    forget = clear  # a closed page
