"""What Stop shows: the stopped answer's stats, which Gradio's cancellation keeps from the chat handler.

On Stop, Gradio cancels the chat handler at once; the engine ends within a token and then yields the answer's
Finished (its stats, marked stopped), which the stream plumbing still reads (medcot.ui.streaming) and hands here.
The Stop handler waits a moment for it and shows it under the stopped answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from medcot.events import Finished, Stats
from medcot.ui.answers import AnswerRecord

# How long Stop waits for the stream's Finished: the engine ends within a token (~30 ms on 2 cores).
STOP_STATS_WAIT_S = 3.0


class FinishedAnswers:
    """Each page session's latest answer's stats, once its stream has finished (stopped or not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._answers: dict[str, tuple[threading.Event, list[Stats]]] = {}

    def begin(self, session: str | None, record: AnswerRecord | None = None) -> Callable[[Finished], None] | None:
        """A new answer of ``session``: the callback its stream's Finished goes to (None without a session), which
        also hands it to the answer's ``record``."""
        if not session:
            return None
        arrived, stats = threading.Event(), []

        def finished(event: Finished) -> None:
            if record is not None:
                record.apply(event)
            stats.append(event.stats)
            arrived.set()

        with self._lock:
            self._answers[session] = (arrived, stats)
        return finished

    def clear(self, session: str | None) -> None:
        """A question not answered yet (waiting for the model): a Stop now has no stats to wait for."""
        with self._lock:
            self._answers.pop(session or "", None)

    def wait(self, session: str | None, timeout: float = STOP_STATS_WAIT_S) -> Stats | None:
        with self._lock:
            answer = self._answers.get(session or "")
        if answer is None:
            return None
        arrived, stats = answer
        arrived.wait(timeout)
        return stats[-1] if stats else None

    forget = clear  # a closed page
