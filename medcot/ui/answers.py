"""Each answer the page shows, kept as data (question, reasoning, answer, Stats, settings) per page session: the
export and the feedback read the record, never the page's Markdown. The message that ends an answer (its stats line,
a stop or error mark) points at its record by the id in its metadata.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from medcot.config import GenerationParams
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats
from medcot.export import Reply

# Answers kept per session: the export holds what the page shows, and a page holds far fewer in practice.
KEEP_PER_SESSION = 500
# How long Stop waits for the stream's Finished: the engine ends within a token (~30 ms on 2 cores).
STOP_STATS_WAIT_S = 3.0


def session_of(request: object) -> str | None:
    """The page session of a Gradio request (None for a direct call)."""
    return getattr(request, "session_hash", None)


@dataclass
class AnswerRecord:
    """One model's answer to one question, as it streams in."""

    question: str
    params: GenerationParams
    use_adapter: bool = True  # False: the base model with the adapter off (the comparison)
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    reasoning: str = ""
    reasoning_duration: float | None = None  # set once the reasoning closed (or was cut off)
    reasoning_cut_off: bool = False
    answer: str = ""
    stats: Stats | None = None  # None until the stream's Finished arrives (never, for one stopped early)
    stopped: bool = False  # Stop ended it (the stats may still come, marked stopped)
    failure: str | None = None  # why it has no answer: an error, or not run
    # Set when the Finished comes, once its stream began (begin_stream): Stop waits for it, as Gradio's cancellation
    # keeps it from the chat handler and only the stream plumbing still reads it.
    arrived: threading.Event | None = field(default=None, repr=False, compare=False)

    def apply(self, event: object) -> None:
        if isinstance(event, ReasoningDelta):
            self.reasoning += event.text
        elif isinstance(event, ReasoningDone):
            self.reasoning = self.reasoning.strip()
            self.reasoning_duration = event.duration
            self.reasoning_cut_off = event.cut_off
        elif isinstance(event, AnswerDelta):
            self.answer += event.text
        elif isinstance(event, Finished):
            self.answer = self.answer.strip()
            self.reasoning = self.reasoning.strip()
            self.stats = event.stats
            self.stopped = self.stopped or event.stats.stopped
            if self.arrived is not None:
                self.arrived.set()

    def begin_stream(self) -> Callable[[Finished], None]:
        """Its stream begins: the callback the stream's Finished goes to, also after a Stop (wait_for_stats)."""
        self.arrived = threading.Event()
        return self.apply

    def wait_for_stats(self, timeout: float = STOP_STATS_WAIT_S) -> None:
        """Until its stream's Finished is in, for at most ``timeout`` (none to wait for before its stream began)."""
        if self.arrived is not None:
            self.arrived.wait(timeout)

    @property
    def finished(self) -> bool:
        return self.stats is not None

    @property
    def wrote_reasoning(self) -> bool:
        return bool(self.reasoning.strip())

    @property
    def notes(self) -> tuple[str, ...]:
        """Why the answer ended as it did, in plain sentences (the export, the feedback and /ask use them)."""
        stats = self.stats
        notes = [self.failure] if self.failure else []
        if stats is None:
            return (*notes, "Stopped by the user.") if self.stopped else tuple(notes)
        if stats.reasoning_closed_by_app:
            notes.append("The model left its reasoning open; the app closed it for the answer.")
        if self.stopped or stats.stopped:
            notes.append("Stopped by the user.")
        elif stats.reasoning_cut_off:
            notes.append(f"The token limit ({stats.new_tokens} tokens) cut the reasoning off before an answer.")
        elif stats.hit_token_limit:
            notes.append(f"The token limit ({stats.new_tokens} tokens) cut the answer off.")
        elif not self.answer.strip():
            notes.append("The model returned no answer.")
        return tuple(notes)

    def reply(self, stats_text: str | None = None) -> Reply:
        """The answer as the export writes it (``stats_text``: the stats line as shown, in plain text)."""
        return Reply(self.answer.strip(), self.reasoning.strip() or None, self.notes, stats_text)


class AnswerStore:
    """Every page session's answers by id, the newest last (bounded); dropped when the page closes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, OrderedDict[str, AnswerRecord]] = {}

    def add(self, session: str | None, record: AnswerRecord) -> AnswerRecord:
        with self._lock:
            answers = self._sessions.setdefault(session or "", OrderedDict())
            answers[record.id] = record
            while len(answers) > KEEP_PER_SESSION:
                answers.popitem(last=False)
        return record

    def get(self, session: str | None, answer_id: object) -> AnswerRecord | None:
        with self._lock:
            return self._sessions.get(session or "", {}).get(str(answer_id))

    def latest(self, session: str | None, use_adapter: bool = True) -> AnswerRecord | None:
        """The session's newest answer from the fine-tuned column (``use_adapter``) or the base one."""
        with self._lock:
            answers = list(self._sessions.get(session or "", {}).values())
        return next((record for record in reversed(answers) if record.use_adapter == use_adapter), None)

    def forget(self, session: str | None) -> None:
        with self._lock:
            self._sessions.pop(session or "", None)


class NoAnswerError(ValueError):
    """The model gave no answer; the message says why (token limit, stopped, nothing at all)."""


def api_text(record: AnswerRecord, include_reasoning: bool) -> str:
    """What /ask returns: the answer, with a note when it ended short; no answer at all raises NoAnswerError naming
    why, unless the reasoning was asked for (its Answer part then says so)."""
    notes = " ".join(record.notes)
    answer = record.answer.strip()
    if not answer:
        why = notes or "The model returned no answer."
        if record.stats is not None and record.stats.reasoning_cut_off:
            why += " Raise max_new_tokens (up to 4096) and ask again."
        if not include_reasoning:
            raise NoAnswerError(why)
        answer = f"[No answer: {why}]"
    elif notes:
        answer = f"{answer}\n\n[Note: {notes}]"
    if include_reasoning:
        return f"Reasoning:\n{record.reasoning.strip()}\n\nAnswer:\n{answer}"
    return answer
