"""How loading reports its progress: (message, fraction done or None), and the one logger of those reports."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Progress = Callable[[str, float | None], None]


def log_progress(message: str, fraction: float | None) -> None:
    """The default report: a log line (the UI and CLI add their own reports on top)."""
    log.info("%s%s", message, "" if fraction is None else f" ({fraction:.0%})")
