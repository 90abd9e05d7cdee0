"""What an answer streams: reasoning and answer text, the end of the reasoning, then Finished with the stats.

Also the one signature every stream function has (StreamFn: Engine.stream and the ZeroGPU wrapper), and the stats
line shown under an answer, formatted and read back here without Gradio so that the UI and the benchmark share it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from medcot.request import Query


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
    reasoning_closed_by_app: bool = False  # the model left its reasoning open; the app closed it (budget_forcing)

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


class StreamFn(Protocol):
    """One query's events; setting ``cancel`` stops it within a token. Engine.stream has this signature."""

    def __call__(self, query: Query, cancel: threading.Event | None = None) -> Iterator[StreamEvent]: ...


# -- the stats line ----------------------------------------------------------------------------------------------
STATS_PREFIX = "<sub>⏱"  # marks the stats line, which is shown under an answer but never fed back to the model
STATS_END = "</sub>"
CUT_OFF_NOTICE = (
    "**The reasoning was cut off by the token limit** before an answer. "
    "Raise *Max new tokens* in Generation settings and ask again."
)
# Why an answer ended short, under its stats line (the UI's export reads them back into notes).
STOPPED_NOTICE = "_Stopped: the answer above is as far as it got._"
ANSWER_CUT_OFF_NOTICE = (
    "_Cut off by the token limit ({tokens} tokens): raise *Max new tokens* in Generation settings for the rest._"
)
NO_ANSWER_NOTICE = "_The model returned no answer._"
_STATS_TOKENS = re.compile(r"(\d+) tokens \(")
_STATS_TTFT = re.compile(r"first token ([\d.]+) s")
_STATS_RATE = re.compile(r"([\d.]+) tok/s")


def format_stats(stats: Stats, answered: bool = True) -> str:
    """The stats line under an answer (Markdown), then a notice when the answer ended short: stopped, cut off by
    the token limit (in the reasoning or in the answer), or nothing at all (``answered``: any answer text shown)."""
    parts = []
    if stats.time_to_first_token is not None:
        parts.append(f"first token {stats.time_to_first_token:.2f} s")
    parts.append(f"{stats.tokens_per_second:.1f} tok/s")
    parts.append(f"{stats.new_tokens} tokens ({stats.reasoning_tokens} reasoning · {stats.answer_tokens} answer)")
    line = f"{STATS_PREFIX} " + " · ".join(parts)
    if stats.turns_dropped:
        line += f" · {stats.turns_dropped} oldest turn(s) left out to fit the context"
    line += STATS_END
    if stats.stopped:
        return f"{line}\n\n{STOPPED_NOTICE}"
    if stats.reasoning_cut_off:
        return f"{line}\n\n{CUT_OFF_NOTICE}"
    if stats.hit_token_limit:
        return f"{line}\n\n{ANSWER_CUT_OFF_NOTICE.format(tokens=stats.new_tokens)}"
    if not answered:
        return f"{line}\n\n{NO_ANSWER_NOTICE}"
    return line


def is_stats_line(text: str) -> bool:
    return text.startswith(STATS_PREFIX)


def parse_stats(line: str | None) -> dict[str, float | int | None]:
    """The figures back from a stats line: tokens generated, time to first text (s), tokens/s; None where absent."""

    def number(pattern: re.Pattern[str], kind: type) -> float | int | None:
        found = pattern.search(line or "")
        return kind(found.group(1)) if found else None

    return {
        "tokens": number(_STATS_TOKENS, int),
        "server_ttft_s": number(_STATS_TTFT, float),
        "server_tok_s": number(_STATS_RATE, float),
    }
