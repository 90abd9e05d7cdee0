"""The one-time conversion's hidden temp folders: locked while their conversion runs, removed once it died.

A conversion works in a temp folder holding LOCK_NAME locked (filelock: flock on Linux) until the folder is in place.
The kernel ends the lock with the process however it ends (Ctrl-C, kill -9, a Space restart), so any later start can
tell a dead conversion's leftover (250 MB-1 GB) from one running right now in another process, and removes it.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCK_NAME = ".medcot-converting"
# A temp folder without the lock file (made by an older medcot, or being made this very moment) is removed once it
# is this old: no conversion takes half an hour.
STALE_S = 1800


def conversion_lock(folder: Path) -> FileLock:
    """The lock a conversion holds on its temp ``folder`` while it runs."""
    return FileLock(folder / LOCK_NAME)


def _abandoned(folder: Path) -> bool:
    if not (folder / LOCK_NAME).exists():
        return time.time() - folder.stat().st_mtime > STALE_S
    try:
        with conversion_lock(folder).acquire(timeout=0):
            return True  # nobody holds it: its process is gone
    except Timeout:
        return False  # converting right now, in another process


def remove_abandoned(root: Path, pattern: str) -> None:
    """Remove the temp folders under ``root`` matching ``pattern`` whose conversion is no longer running."""
    for leftover in root.glob(pattern):
        try:
            if _abandoned(leftover):
                log.info("Removing %s, left by a conversion that did not finish", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:  # removed meanwhile by another start, or not ours to remove
            pass
