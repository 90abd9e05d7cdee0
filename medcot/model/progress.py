"""How loading reports its progress: (message, fraction done or None), the one logger of those reports, the
terminal lines the CLI and `python app.py` print of them, and the one-time conversion's steps on the bar."""

from __future__ import annotations

import logging
import re
import threading
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
    """A load progress callback that writes `… message (40%)` lines to a terminal or a Space's log: one per new step,
    and for a step that reports as it moves (the conversion, per tensor) one more at most every `repeat_s`."""

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


TICK_S = 1.0  # how often a step without progress of its own is re-reported (the page polls every second)


class Steps:
    """Reports the conversion's steps, each owning a slice [start, end) of the bar. A step that moves (``advance``:
    the weights, per tensor) shows it; one that cannot is re-reported every TICK_S, filled by its time against its
    estimate, never past 90% of its share."""

    def __init__(self, progress: Progress, prefix: str) -> None:
        self._progress = progress
        self._prefix = prefix
        self._lock = threading.Lock()
        self._step: tuple[str, float, float, float] | None = None  # label, start, end, estimate in seconds
        self._title = ""
        self._started = 0.0
        self._advanced = False
        self._shown = self._floor = 0.0
        self._closed = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="medcot-convert-progress", daemon=True)
        self._ticker.start()

    def begin(self, label: str, start: float, end: float, estimate_s: float) -> None:
        with self._lock:
            self._step, self._started, self._advanced = (label, start, end, estimate_s), time.monotonic(), False
            self._title = f"{self._prefix}{label} (one time, up to ~{estimate_s:.0f} s)"
            self._report(self._title, start)

    def advance(self, done: float, detail: str) -> None:
        """The current step is ``done`` (0-1) through its work; ``detail`` says what it is at."""
        with self._lock:
            if self._step is None:
                return
            label, _, end, _ = self._step
            if not self._advanced:  # the rest of the step's share, from where its time-based filling left it
                self._advanced, self._floor = True, self._shown
            fraction = self._floor + (end - self._floor) * min(max(done, 0.0), 1.0)
            self._report(f"{self._prefix}{label}: {detail}", fraction)

    def _report(self, message: str, fraction: float) -> None:
        self._shown = max(self._shown, fraction)  # the bar never goes back
        self._progress(message, self._shown)

    def close(self) -> None:
        self._closed.set()
        self._ticker.join()

    def _tick(self) -> None:
        while not self._closed.wait(TICK_S):
            with self._lock:
                if self._step is None or self._advanced:
                    continue
                _, start, end, estimate = self._step
                share = 0.9 * min((time.monotonic() - self._started) / estimate, 1.0) if estimate > 0 else 0.0
                self._report(self._title, start + (end - start) * share)
