"""The model's load as the app holds it: the backend once loaded, else why it could not load or how far it got.
The load runs once, in a thread; everything else asks this state what it can say (the status line) and do."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar

from medcot.backends import Backend, load_backend, settings_from_env
from medcot.config import Settings
from medcot.errors import ConfigError, ModelLoadError
from medcot.model.progress import Progress, log_progress

log = logging.getLogger(__name__)
T = TypeVar("T")


def in_passing_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread that ends with it, its exception re-raised here.

    A thread that ran a parallel torch op on CPU keeps its OpenMP team for life: the load's left with the CLI's main
    thread beside each generation's made more threads than cores, decoding 24 instead of 35 tok/s on 2 cores.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="medcot-load-worker") as pool:  # its thread ends on leaving
        return pool.submit(function, *args).result()


class LoadState:
    """The backend (or the reason it could not load, or the load's progress) for the settings."""

    def __init__(self, settings: Settings, backend: Backend | None = None) -> None:
        self.settings = settings
        self.backend = backend
        self.error: str | None = None
        self.progress: tuple[str, float | None] = ("Waiting to load the model", None)
        self._ready = threading.Event()
        if backend is not None:
            self._ready.set()

    @classmethod
    def from_env(cls) -> Self:
        """The state for the environment's settings; a bad setting becomes its error, not a crash."""
        try:
            return cls(settings_from_env())
        except ConfigError as exc:
            state = cls(Settings())
            state.error = f"Configuration error: {exc}"
            state._ready.set()
            return state

    def load(self, on_progress: Progress | None = None, *, in_this_thread: bool = False) -> Self:
        """Load synchronously, in a passing thread unless ``in_this_thread`` (ZeroGPU's CUDA emulation covers the
        importing thread only); a failure is kept as a readable message instead of raised."""

        def report(message: str, fraction: float | None) -> None:
            self.progress = (message, fraction)
            log_progress(message, fraction)
            if on_progress:
                on_progress(message, fraction)

        if self.error:  # a configuration error: nothing to load
            return self
        try:
            if in_this_thread:
                self.backend = load_backend(self.settings, report)
            else:
                self.backend = in_passing_thread(load_backend, self.settings, report)
        except ModelLoadError as exc:
            self.error = str(exc)
            log.error("model load failed: %s", exc)
        except Exception as exc:  # anything unexpected still leaves a running app with a message
            self.error = f"The model could not be loaded ({type(exc).__name__}). See the logs for details."
            log.exception("model load failed")
        finally:
            self._ready.set()
        return self

    def load_in_background(self, on_progress: Progress | None = None) -> threading.Thread:
        thread = threading.Thread(target=self.load, args=(on_progress,), name="medcot-load", daemon=True)
        thread.start()
        return thread

    @property
    def ready(self) -> bool:
        return self.backend is not None

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def status(self) -> str:
        """One line for banners: what is loaded, what is loading, or what went wrong."""
        if self.backend is not None:
            return self.backend.describe()
        if self.error:
            return self.error
        message, fraction = self.progress
        return f"{message}…" + ("" if fraction is None else f" {fraction:.0%}")

    def compare_unavailable(self) -> str | None:
        """Why the base-model comparison cannot run (a sentence for users), or None when it can."""
        if self.backend is None:
            return self.error or "The model is still loading."
        return self.backend.compare_unavailable()

    @property
    def can_compare(self) -> bool:
        return self.compare_unavailable() is None

    @property
    def base_runs_beside(self) -> bool:
        """True when a base answer can run at the same time as the fine-tuned one (a server holds both)."""
        return self.backend is not None and self.backend.runs_base_beside

    @property
    def status_may_change(self) -> bool:
        """True when the loaded backend's status line can still change by itself (the page keeps polling it)."""
        return self.backend is not None and self.backend.status_may_change

    def require_backend(self) -> Backend:
        if self.backend is not None:
            return self.backend
        if self.error:
            raise ModelLoadError(self.error)
        raise ModelLoadError(f"The model is still loading ({self.status()}). Please try again in a moment.")
