"""ZeroGPU's refusals and cut-offs as plain sentences, the same in the page, the API and MCP.

spaces' own message (spaces/zero/client.py `schedule`) is kept, only its form changes: no HTML or Markdown (an API
client shows them raw), the wait in words ("4 min 31 s", not "0:04:31"), and a space between joined sentences.
"""

from __future__ import annotations

import html
import math
import re

CUT_OFF = (
    "This answer needed more GPU time than the {asked} s asked for it, so ZeroGPU stopped it. Please ask again: the "
    "next request asks for more time, from this one. Lowering Max new tokens also shortens what is asked."
)
WORKER_STOPPED = "The GPU stopped while answering{after}. Please ask again."
WORKER_FAILED = "Something went wrong on the GPU while answering. Please ask again."
NOT_SCHEDULED = "ZeroGPU could not give this answer a GPU ({reason}). Please try again in a moment."

_ANCHOR = re.compile(r"<a\b[^>]*\bhref=\"(https?://[^\"]+)\"[^>]*>(.*?)</a>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r"\[([^\]]+)\]\((https?://[^)\s]+)\)")
_WAIT = re.compile(r"(?:(\d+) days?, )?(\d+):(\d{2}):(\d{2})(?:\.\d+)?")
# spaces appends its advice to a sentence without a full stop ("…maximum allowedSubscribe…", "…after 60s Create…")
_JOINED = re.compile(r"(?<=[a-z0-9)]) ?(?=(?:Subscribe|Authenticate|Add credits|Create a free account|Retry later)\b)")
_SPACES = re.compile(r"\s+")


def in_words(seconds: float) -> str:
    """A wait as people say it: "45 s", "4 min 31 s", "2 h 5 min" (seconds rounded up, never "0 s")."""
    total = max(1, math.ceil(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _wait_in_words(found: re.Match[str]) -> str:
    days, hours, minutes, seconds = (int(part or 0) for part in found.groups())
    return in_words(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def plain_text(message: object) -> str:
    """spaces' message as one line of plain text: its text form (spaces' HTML messages carry one as their str()),
    tags dropped, entities decoded, Markdown links as "text (url)", timedeltas in words."""
    text = html.unescape(_TAG.sub("", _ANCHOR.sub(r"\2 (\1)", str(message))))
    text = _LINK.sub(r"\1 (\2)", text)
    text = _WAIT.sub(_wait_in_words, text)
    text = _JOINED.sub(". ", text)
    return _SPACES.sub(" ", text).strip()


def cut_or_failed(asked_s: int, held_s: float | None, cut_fraction: float) -> tuple[bool, str]:
    """A worker that died: (True, CUT_OFF) when it had held the GPU for at least ``cut_fraction`` of what was asked
    (ZeroGPU stops a request at its duration), else (False, WORKER_STOPPED)."""
    if held_s is not None and held_s >= cut_fraction * asked_s:
        return True, CUT_OFF.format(asked=asked_s)
    after = f" (after {in_words(held_s)} of the {asked_s} s asked for)" if held_s is not None else ""
    return False, WORKER_STOPPED.format(after=after)
