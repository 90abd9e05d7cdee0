"""How many seconds of GPU a ZeroGPU request asks for one answer, from the speed measured on the answers before it
(the formula and its reasons: README, "The GPU time each request asks"). medcot.zerogpu feeds it and asks it.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from medcot.events import Stats

# Until an answer is measured: 15 s of start-up and 0.04 s a token (25 tok/s, slower than this model decodes on 2
# CPU cores, 37 tok/s in docs/benchmark.md), with no margin on top: the guess is the margin.
PRIOR_STARTUP_S = 15.0
PRIOR_SECONDS_PER_TOKEN = 0.04
# On measured figures: the GPU slice and its node vary, and ZeroGPU stops an answer that runs past its ask.
MARGIN = 1.5
MIN_SECONDS = 5  # a fresh worker's start-up alone can take a few seconds
MAX_SECONDS = 120  # quotas are minutes a day (spaces refuses asks over its tier's cap)
WINDOW = 32  # answers remembered: recent enough to follow a change of GPU, enough for a 90th percentile
PERCENTILE = 0.9
MIN_DECODED_TOKENS = 4  # answers shorter than this say little about the time a token takes


def high(values: Iterable[float]) -> float | None:
    """The PERCENTILE-th of ``values`` (nearest rank); None if empty."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(0, math.ceil(PERCENTILE * len(ordered)) - 1)]


@dataclass(frozen=True)
class Figures:
    """What an ask is computed from; ``measured`` is False while the prior stands in for the speed."""

    startup_s: float
    first_token_s: float
    seconds_per_token: float
    answers: int
    measured: bool

    def seconds_for(self, max_new_tokens: int) -> int:
        margin = MARGIN if self.measured else 1.0
        estimate = margin * (self.startup_s + self.first_token_s + max_new_tokens * self.seconds_per_token)
        return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(estimate))))

    def describe(self) -> str:
        if not self.measured:
            return f"not measured yet: {self.startup_s:g} s + {self.seconds_per_token:g} s a token"
        return (
            f"measured over {self.answers} answer(s): start-up {self.startup_s:.6g} s, first token "
            f"{self.first_token_s:.6g} s, {self.seconds_per_token:.6g} s a token; margin {MARGIN:g}"
        )


class GpuBudget:
    """The durations to ask, learnt from the answers served (thread-safe: requests run side by side)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._startups: deque[float] = deque(maxlen=WINDOW)  # a fresh GPU worker's, to its first generation
        self._first_tokens: deque[float] = deque(maxlen=WINDOW)
        self._per_token: deque[tuple[float, bool]] = deque(maxlen=WINDOW)  # (seconds a token, from a cut answer)

    def observe_startup(self, seconds: float) -> None:
        """A fresh worker's start-up: from its fork to the start of its first generation."""
        with self._lock:
            self._startups.append(max(0.0, seconds))

    def observe_answer(self, stats: Stats) -> None:
        """An answer's time to first text and its time a token after that (a stopped answer counts too)."""
        with self._lock:
            if stats.time_to_first_token is not None:
                self._first_tokens.append(stats.time_to_first_token)
            decoded = stats.new_tokens - stats.tokens_at_first_text
            decode_s = stats.seconds - (stats.time_to_first_token or 0.0)
            if decoded >= MIN_DECODED_TOKENS and decode_s > 0:
                self._per_token.append((decode_s / decoded, False))

    def observe_cut(self, held_s: float, max_new_tokens: int) -> None:
        """An answer ZeroGPU stopped after ``held_s`` s: a token took longer than held_s / max_new_tokens. For WINDOW
        answers no ask assumes less (the percentile alone could pass over it), so asks grow until an answer fits."""
        if max_new_tokens > 0 and held_s > 0:
            with self._lock:
                self._per_token.append((held_s / max_new_tokens, True))

    def figures(self) -> Figures:
        with self._lock:
            per_token = high(value for value, _ in self._per_token)
            floor = max((value for value, cut in self._per_token if cut), default=0.0)
            startup = high(self._startups)
            first_token = high(self._first_tokens)
            answers = sum(not cut for _, cut in self._per_token)
        if per_token is None or startup is None:
            return Figures(PRIOR_STARTUP_S, 0.0, PRIOR_SECONDS_PER_TOKEN, 0, measured=False)
        return Figures(startup, first_token or 0.0, max(per_token, floor), answers, measured=True)

    def seconds_for(self, max_new_tokens: int) -> int:
        return self.figures().seconds_for(max_new_tokens)
