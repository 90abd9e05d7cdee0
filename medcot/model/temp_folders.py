"""The one-time conversion's hidden temp folders: locked while their conversion runs, removed once it died.

A conversion works in a temp folder holding LOCK_NAME locked (flock) until the folder is in place. The kernel ends
the lock with the process however it ends (Ctrl-C, kill -9, a Space restart), so any later start can tell a dead
conversion's leftover (250 MB-1 GB) from one running right now in another process, and removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".medcot-converting"
# A temp folder without the lock file (made by an older medcot, or being made this very moment) is removed once it
# is this old: no conversion takes half an hour.
STALE_S = 1800


def remove_abandoned(root: Path, pattern: str) -> None:
    """Remove the temp folders under ``root`` matching ``pattern`` whose conversion is no longer running."""
    for leftover in root.glob(pattern):
        try:
            with held_lock(leftover / LOCK_NAME, wait=False) as ours:
                if ours or (ours is None and time.time() - leftover.stat().st_mtime > STALE_S):
                    log.info("Removing %s, left by a conversion that did not finish", leftover)
                    shutil.rmtree(leftover, ignore_errors=True)
        except OSError:  # removed meanwhile by another start, or not ours to remove
            pass


@contextlib.contextmanager
def held_lock(path: Path, wait: bool) -> Iterator[bool | None]:
    """An exclusive flock on ``path`` (created when ``wait``): yields True while held, False when another process
    holds it, None when there is no such file (or no flock on this platform: Windows goes by age alone)."""
    try:
        import fcntl
    except ImportError:
        yield None
        return
    try:
        fd = os.open(path, os.O_RDWR | (os.O_CREAT if wait else 0), 0o644)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # also releases the lock
