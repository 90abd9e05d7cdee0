"""A question asked while the model loads waits for it (bounded), instead of being refused."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import anyio

from medcot.engine import Engine

POLL_S = 1.0  # how often the waiting chat shows the load's progress (the status line's pace)


async def wait_for_model(engine: Engine, limit_s: float) -> AsyncIterator[None]:
    """Yield about every POLL_S while the model is still loading, for at most ``limit_s``; then return.

    Returns at once when the model is loaded or failed; the caller's request then proceeds (and says "still loading"
    or the failure itself, through the engine, if the model is not there).
    """
    deadline = time.monotonic() + limit_s
    while not engine.wait_until_loaded(0) and (left := deadline - time.monotonic()) > 0:
        yield
        await anyio.to_thread.run_sync(engine.wait_until_loaded, min(POLL_S, left))
