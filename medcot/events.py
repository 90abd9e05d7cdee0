"""What an answer streams: reasoning and answer text, the end of the reasoning, then Finished with the stats.
Data only: the UI (medcot.ui.stats_line, medcot.ui.rendering) and the CLI render them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReasoningDelta:
    text: str


@dataclass(frozen=True)
class ReasoningDone:
    duration: float  # seconds from the opening tag (or the start, when prefilled) to the closing one
    cut_off: bool = False  # True when the output ended with no closing tag (token limit or stop)


@dataclass(frozen=True)
class AnswerDelta:
    text: str


Event = ReasoningDelta | ReasoningDone | AnswerDelta


@dataclass(frozen=True)
class Stats:
    """What one answer cost; shown under the answer and returned to API clients."""

    prompt_tokens: int
    new_tokens: int
    reasoning_tokens: int
    answer_tokens: int
    time_to_first_token: float | None  # seconds from request to first streamed text
    seconds: float
    hit_token_limit: bool
    reasoning_cut_off: bool  # a <think> block never closed
    stopped: bool  # the client stopped it
    turns_dropped: int
    tokens_at_first_text: int = 1  # the streamer holds text back to word boundaries: tokens already made by then
    reasoning_closed_by_app: bool = False  # the app closed a reasoning the model left open (answer_stream)

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first visible text (so prefill time does not count)."""
        decode_time = self.seconds - (self.time_to_first_token or 0.0)
        decoded = self.new_tokens - self.tokens_at_first_text
        if decoded > 0 and decode_time > 0:
            return decoded / decode_time
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Finished:
    stats: Stats


StreamEvent = Event | Finished
