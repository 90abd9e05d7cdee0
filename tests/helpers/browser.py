"""Browser-test helpers: the app served in-process on a free port, a slowed and gateable stream around the real
engine, and the Debian chromium that Playwright drives (its own browser downloads are never used)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, expect

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import Finished, ReasoningDelta, StreamEvent
from medcot.prompt import Turn
from medcot.request import Query
from tests.helpers.polling import wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"


class SlowStream:
    """The app's stream function around engine.stream, with a pause before each event so the pending state stays
    on screen long enough to see.

    After ``free_events`` events each further event waits for ``gate`` (set by default): clear it to freeze a
    stream mid-reasoning at a known point; ``gated`` says which streams it holds (adapter on: True, base: False). A
    frozen stream still ends when the app sets the request's cancel event, as the engine does within a token.
    Records the questions, turns, parameters, adapter switches and cancel events it got and the events it served,
    so a test can tell that Stop really ended the request on the server.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.gate = threading.Event()
        self.reset()

    def reset(
        self,
        delay: float = 0.06,
        free_events: int = 1_000_000,
        gated: frozenset[bool] = frozenset({True, False}),
        overrides: dict[str, Any] | None = None,
    ) -> None:
        """``overrides``: generation parameters forced on every request (a deep link cannot set the temperature)."""
        self.overrides = overrides or {}
        self.delay = delay
        self.free_events = free_events
        self.gated = gated
        self.gate.set()
        self.served = 0
        self.served_by: list[int] = []  # events served, per request
        self.reasoning_served = ""  # the reasoning text served so far, of the last request
        self.adapters: list[bool] = []
        self.questions: list[str] = []
        self.params: list[GenerationParams] = []
        self.turns: list[list[Turn]] = []
        self.cancels: list[threading.Event] = []

    def __call__(self, query: Query, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        cancel = cancel if cancel is not None else threading.Event()
        query = replace(query, params=replace(query.params or GenerationParams(), **self.overrides))
        use_adapter = query.use_adapter
        self.questions.append(query.question)
        self.adapters.append(use_adapter)
        self.params.append(query.params)
        self.turns.append(list(query.history))
        self.cancels.append(cancel)
        self.served_by.append(0)
        request = len(self.served_by) - 1
        self.reasoning_served = ""
        events = self.engine.stream(query, cancel)
        try:
            for count, event in enumerate(events):
                time.sleep(self.delay)
                held = count >= self.free_events and use_adapter in self.gated
                while held and not self.gate.wait(0.05) and not cancel.is_set():
                    pass
                if cancel.is_set():
                    # As the engine does once stopped: nothing more of the answer, only its Finished with the stats
                    # (not counted as served: a test tells from `served` that Stop ended the request).
                    yield from (rest for rest in events if isinstance(rest, Finished))
                    return
                self.served += 1
                self.served_by[request] += 1
                if isinstance(event, ReasoningDelta):
                    self.reasoning_served += event.text
                yield event
        finally:
            events.close()

    @staticmethod
    def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
        return wait_until(condition, timeout, interval=0.05)


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


@contextlib.contextmanager
def open_page(chromium: Browser, url: str, timeout_ms: int = 20_000) -> Iterator[Page]:
    """The app in a fresh browser context (a new visitor), once its not-for-clinical-use notice is shown."""
    context = chromium.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(timeout_ms)
    page = context.new_page()
    try:
        page.goto(url)
        expect(page.locator("#disclaimer")).to_be_visible(timeout=timeout_ms)
        yield page
    finally:
        context.close()
