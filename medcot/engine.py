"""The engine: one loaded model answering questions as a stream of reasoning/answer events with stats.

It holds the state (the model or why it could not load, the backend, the prompt style) and runs a request's steps,
each in its own module: the checks (medcot.request), the backend's chunks with budget forcing
(medcot.budget_forcing), the events and stats (medcot.answer_stream), the status text (medcot.availability).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from medcot.answer_stream import Answer, answer_events
from medcot.availability import compare_unavailable, status_line
from medcot.backends import Backend
from medcot.backends.local import LocalBackend
from medcot.budget_forcing import closing_open_reasoning
from medcot.config import GenerationParams, Settings
from medcot.errors import ConfigError, InputError, ModelLoadError
from medcot.events import StreamEvent
from medcot.model.loading import LoadedModel, load_model
from medcot.model.memory import release_freed_memory
from medcot.model.progress import Progress, log_progress
from medcot.model.server_mode import load_for_server
from medcot.prompt import encode_prompt
from medcot.prompt_styles import CARD, PromptStyle, base_prompt_style
from medcot.request import Query, Request, clean_question

log = logging.getLogger(__name__)
T = TypeVar("T")


def in_passing_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread that ends with it, its exception re-raised here.

    Every thread that runs a parallel torch op on CPU keeps an OpenMP (libgomp) thread team for the rest of its life.
    Generation runs in threads of its own; had the loading's team stayed with a long-lived thread (the CLI's main
    thread), each generation's team would make more OpenMP threads than cores, and libgomp then waits for work with
    100 spins instead of 300,000: decoding measured 24 instead of 35 tok/s on 2 cores.
    """
    result: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            result.append(function(*args))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name="medcot-load-worker")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


class Engine:
    """Holds the model (or the reason it could not load) and answers questions.

    The UI, API and CLI are functions of an Engine, so tests can hand them one over a tiny real model.
    """

    def __init__(self, settings: Settings, loaded: LoadedModel | None = None) -> None:
        self.settings = settings
        self.loaded = loaded
        self.error: str | None = None
        self.progress: tuple[str, float | None] = ("Waiting to load the model", None)
        self._ready = threading.Event()
        self._backend: LocalBackend | None = None
        self._backend_lock = threading.Lock()
        self.base_style: PromptStyle | None = None  # set: overrides MEDCOT_BASE_PROMPT for a base alone (the eval)
        if loaded is not None:
            self._ready.set()

    @classmethod
    def from_env(cls) -> Engine:
        """An engine for the environment's settings; a bad setting becomes the engine's error, not a crash."""
        try:
            return cls(Settings.from_env())
        except ConfigError as exc:
            engine = cls(Settings())
            engine.error = f"Configuration error: {exc}"
            engine._ready.set()
            return engine

    # -- loading -------------------------------------------------------------------------------------------------
    def load(self, on_progress: Progress | None = None, *, in_this_thread: bool = False) -> Engine:
        """Load synchronously; a failure is kept as a readable message instead of raised.

        The load runs in a passing thread (see in_passing_thread) unless ``in_this_thread``: ZeroGPU's CUDA
        emulation covers the importing thread only, so there the model must load in it.
        """

        def report(message: str, fraction: float | None) -> None:
            self.progress = (message, fraction)
            log_progress(message, fraction)
            if on_progress:
                on_progress(message, fraction)

        if self.error:  # a configuration error: nothing to load
            return self
        try:
            loader = load_for_server if self.settings.server_mode else load_model
            if in_this_thread:
                self.loaded = loader(self.settings, report)
            else:
                self.loaded = in_passing_thread(loader, self.settings, report)
        except ModelLoadError as exc:
            self.error = str(exc)
            log.error("model load failed: %s", exc)
        except Exception as exc:  # anything unexpected still leaves a running app with a message
            self.error = f"The model could not be loaded ({type(exc).__name__}). See the logs for details."
            log.exception("model load failed")
        finally:
            self._ready.set()
        return self

    def load_in_background(self, on_progress: Callable[[str, float | None], None] | None = None) -> threading.Thread:
        thread = threading.Thread(target=self.load, args=(on_progress,), name="medcot-load", daemon=True)
        thread.start()
        return thread

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    def wait_until_loaded(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def status(self) -> str:
        """One line for banners: what is loaded, what is loading, or what went wrong."""
        return status_line(self.loaded, self.error, self.progress)

    def compare_unavailable(self) -> str | None:
        """Why the base-model comparison cannot run (a sentence for users), or None when it can."""
        return compare_unavailable(self.loaded, self.error)

    @property
    def can_compare(self) -> bool:
        return self.compare_unavailable() is None

    @property
    def base_runs_beside(self) -> bool:
        """True when a base answer can run at the same time as the fine-tuned one (a server holds both)."""
        return self.loaded is not None and self.loaded.server is not None

    def require_model(self) -> LoadedModel:
        if self.loaded is not None:
            return self.loaded
        if self.error:
            raise ModelLoadError(self.error)
        raise ModelLoadError(f"The model is still loading ({self.status()}). Please try again in a moment.")

    # -- answering -----------------------------------------------------------------------------------------------
    def backend(self, loaded: LoadedModel, stop_texts: Sequence[str] = CARD.stop_texts) -> Backend:
        """The backend generating with ``loaded`` (made again for another model, or other stop texts)."""
        if loaded.server is not None:  # server mode prompts with the card's style, whose stop texts it sends
            return loaded.server
        with self._backend_lock:
            backend = self._backend
            if backend is None or backend.loaded is not loaded or backend.stop_texts != tuple(stop_texts):
                self._backend = LocalBackend(loaded, stop_texts, self.settings.decode)
            return self._backend

    def prompt_style(self, use_adapter: bool = True) -> PromptStyle:
        """How the loaded model is prompted: the card's prompt unless a base model runs alone.

        The comparison (adapter switched off) keeps the card's prompt, so the two columns differ by the adapter only.
        """
        loaded = self.loaded
        if loaded is None or loaded.kind != "base":
            return CARD
        if self.base_style is not None:
            return self.base_style
        return base_prompt_style(self.settings.base_prompt, loaded.embedded)

    def generation_defaults(self) -> GenerationParams:
        """The decoding a request gets when it sets none: the style's for a primed base, else the card's.

        MEDCOT_MAX_NEW_TOKENS still sets the budget.
        """
        decoding = self.prompt_style().decoding
        defaults = self.settings.generation_defaults
        return defaults if decoding is None else replace(decoding, max_new_tokens=defaults.max_new_tokens)

    def stream(self, query: Query, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        """Yield reasoning/answer events, then Finished with the stats (a StreamFn). Closing the iterator or
        setting ``cancel`` stops generation."""
        yield from self.generate(self.prepare(query), cancel)

    def prepare(self, query: Query) -> Request:
        """Every check a request gets before the model runs (model ready, question, settings, base model available,
        prompt length), raising its user error; what passes is the request generate() runs.

        Split from generation so that a caller running the model elsewhere (a ZeroGPU worker) refuses bad requests
        before it asks for a GPU, with the readable message.
        """
        loaded = self.require_model()
        question = clean_question(query.question)
        params = (query.params or self.generation_defaults()).validated()
        use_adapter = query.use_adapter
        if not use_adapter and loaded.kind != "base" and not self.can_compare:  # the base alone is its own base
            raise InputError(self.compare_unavailable() or "The base model is not available.")
        style = self.prompt_style(use_adapter)
        prompt = encode_prompt(loaded.tokenizer, question, query.history, self.settings.max_input_tokens, style)
        return Request(prompt, params, use_adapter, style)

    def generate(self, request: Request, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        """A prepared request's events, then Finished with the stats. Closing the iterator or setting ``cancel``
        stops generation."""
        loaded = self.require_model()
        cancel = cancel if cancel is not None else threading.Event()
        backend = self.backend(loaded, request.style.stop_texts)
        # No chunk at all when stopped while another request held the model in the other adapter state.
        yield from answer_events(closing_open_reasoning(backend, loaded.tokenizer, request, cancel), request, cancel)
        if loaded.device == "cpu":  # after the answer is out: what its generation freed goes back to the OS
            release_freed_memory()

    def ask(self, query: Query) -> Answer:
        """Run a whole request; the final answer, the reasoning and the stats."""
        return Answer.from_events(self.stream(query))
