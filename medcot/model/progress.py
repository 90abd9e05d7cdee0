"""How loading reports its progress: (message, fraction done or None), the one logger of those reports, and the
terminal lines the CLI and `python app.py` print of them."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import TextIO

log = logging.getLogger(__name__)

Progress = Callable[[str, float | None], None]


def log_progress(message: str, fraction: float | None) -> None:
    """The default report: a log line (the UI and CLI add their own reports on top)."""
    log.info("%s%s", message, "" if fraction is None else f" ({fraction:.0%})")


# Numbers are masked to tell steps apart: "tensor 12/236" and "tensor 13/236" are the same step moving on.
_NUMBERS = re.compile(r"\d+")


class ProgressLines:
    """A load progress callback that writes `… message (40%)` lines to a terminal or a Space's log.

    Every new step gets a line. A step that reports as it moves (the one-time conversion, per tensor) gets one more
    at most every `repeat_s`, so the terminal shows it moving without hundreds of lines.
    """

    def __init__(self, stream: TextIO, repeat_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream
        self.repeat_s = repeat_s
        self._clock = clock
        self._step: str | None = None
        self._written_at = 0.0

    def __call__(self, message: str, fraction: float | None) -> None:
        step, now = _NUMBERS.sub("#", message), self._clock()
        if step == self._step and now - self._written_at < self.repeat_s:
            return
        self._step, self._written_at = step, now
        percent = "" if fraction is None else f" ({fraction:.0%})"
        self.stream.write(f"… {message}{percent}\n")
        self.stream.flush()
