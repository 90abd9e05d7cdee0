"""The engine: one loaded model answering questions as a stream of reasoning/answer events with stats."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from medcot.backends import Backend
from medcot.backends.local import LocalBackend
from medcot.config import GenerationParams, Settings
from medcot.errors import ConfigError, InputError, ModelLoadError
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats, StreamEvent
from medcot.generation import Chunk
from medcot.model.loading import LoadedModel, load_model
from medcot.model.memory import release_freed_memory
from medcot.model.progress import Progress, log_progress
from medcot.model.server_mode import load_for_server
from medcot.prompt import EncodedPrompt, Turn, encode_prompt, encode_text
from medcot.prompt_styles import CARD, PromptStyle, base_prompt_style
from medcot.reasoning import CLOSE_TAG, ThinkParser

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_QUESTION_CHARS = 8000  # far above any real question; keeps tokenization of hostile input cheap


def _in_passing_thread(function: Callable[..., T], *args: Any) -> T:
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


@dataclass(frozen=True)
class ClosingTag(Chunk):
    """The ``</think>`` the engine wrote for a model that left its reasoning open (Engine._generate)."""


@dataclass(frozen=True)
class Request:
    """A request that passed Engine.prepare's checks: what generation needs, and nothing that cannot be pickled
    (a ZeroGPU worker receives it from another process)."""

    prompt: EncodedPrompt
    params: GenerationParams
    use_adapter: bool = True
    style: PromptStyle = CARD  # how the prompt was built: its stop texts and whether it opened the reasoning


@dataclass
class Answer:
    answer: str
    reasoning: str
    stats: Stats | None = None
    events: list[StreamEvent] = field(default_factory=list)


def clean_question(question: object) -> str:
    """Validate a question from any client; raise InputError with a readable message."""
    if not isinstance(question, str):
        raise InputError(f"The question must be text, not {type(question).__name__}.")
    # Lone surrogates cannot be encoded or tokenized; NUL and other C0 controls carry nothing for the model.
    text = question.encode("utf-8", "replace").decode("utf-8")
    text = "".join(ch for ch in text if ch in "\n\t" or ch.isprintable() or ch == " " or ord(ch) > 0x9F)
    text = text.strip()
    if not text:
        raise InputError("Please type a question.")
    if len(text) > MAX_QUESTION_CHARS:
        raise InputError(f"The question is too long ({len(text):,} characters; the limit is {MAX_QUESTION_CHARS:,}).")
    return text


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

        The load runs in a passing thread (see _in_passing_thread) unless ``in_this_thread``: ZeroGPU's CUDA
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
                self.loaded = _in_passing_thread(loader, self.settings, report)
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
        if self.loaded is not None and self.loaded.server is not None:
            return self.loaded.server.describe()  # what it is connected to, or why it cannot answer
        if self.loaded is not None:
            notes = " ".join(self.loaded.notes)
            return f"{self.loaded.describe()}. {notes}".strip()
        if self.error:
            return self.error
        message, fraction = self.progress
        return f"{message}…" + ("" if fraction is None else f" {fraction:.0%}")

    def compare_unavailable(self) -> str | None:
        """Why the base-model comparison cannot run (a sentence for users), or None when it can."""
        loaded = self.loaded
        if loaded is None:
            return self.error or "The model is still loading."
        if loaded.server is not None:
            return loaded.server.compare_unavailable()
        if loaded.kind == "base":
            if loaded.embedded:
                return "The embedded base model runs without the medical adapter: there is nothing to compare."
            return "No adapter is configured (MEDCOT_ADAPTER is empty): the base model runs alone."
        if loaded.kind == "merged":
            return (
                f"`{loaded.adapter_id}` holds merged weights, so the base model is not loaded beside it "
                "(point MEDCOT_ADAPTER at the LoRA adapter to compare)."
            )
        if loaded.merged and loaded.base_delta is None:
            return (
                "This adapter is not plain LoRA (DoRA, biases or fully trained modules), so its merge cannot be "
                "undone for the base model; set MEDCOT_MERGE=0 to keep it separate and compare."
            )
        return None

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
                self._backend = LocalBackend(loaded, stop_texts)
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

    def stream(
        self,
        question: str,
        history: Sequence[Turn] = (),
        params: GenerationParams | None = None,
        use_adapter: bool = True,
        cancel: threading.Event | None = None,
    ) -> Iterator[StreamEvent]:
        """Yield reasoning/answer events, then Finished with the stats (a StreamFn). Closing the iterator or
        setting ``cancel`` stops generation."""
        request = self.prepare(question, history, params, use_adapter)
        yield from self.generate(request, cancel)

    def prepare(
        self,
        question: str,
        history: Sequence[Turn] = (),
        params: GenerationParams | None = None,
        use_adapter: bool = True,
    ) -> Request:
        """Every check a request gets before the model runs (model ready, question, settings, base model available,
        prompt length), raising its user error; what passes is the request generate() runs.

        Split from generation so that a caller running the model elsewhere (a ZeroGPU worker) refuses bad requests
        before it asks for a GPU, with the readable message.
        """
        loaded = self.require_model()
        question = clean_question(question)
        params = (params or self.generation_defaults()).validated()
        if not use_adapter and loaded.kind != "base" and not self.can_compare:  # the base alone is its own base
            raise InputError(self.compare_unavailable() or "The base model is not available.")
        style = self.prompt_style(use_adapter)
        prompt = encode_prompt(loaded.tokenizer, question, history, self.settings.max_input_tokens, style)
        return Request(prompt, params, use_adapter, style)

    def generate(self, request: Request, cancel: threading.Event | None = None) -> Iterator[StreamEvent]:
        """A prepared request's events, then Finished with the stats. Closing the iterator or setting ``cancel``
        stops generation."""
        loaded = self.require_model()
        prompt, params, use_adapter, style = request.prompt, request.params, request.use_adapter, request.style
        started = time.monotonic()
        parser = ThinkParser(prefilled=style.opens_reasoning)
        first: float | None = None
        first_tokens = 1
        tokens = 0
        reasoning_tokens: int | None = None  # fixed when </think> arrives
        closed_by_app = False
        cancel = cancel if cancel is not None else threading.Event()
        # No chunk at all when stopped while another request held the model in the other adapter state.
        chunks = self._generate(loaded, prompt.input_ids, params, cancel, use_adapter, style)
        try:
            for chunk in chunks:
                closed_by_app = closed_by_app or isinstance(chunk, ClosingTag)
                if first is None and chunk.text:  # a last empty chunk only carries the token count
                    first = time.monotonic() - started
                    first_tokens = chunk.tokens
                tokens = chunk.tokens
                events = parser.feed(chunk.text)
                if any(isinstance(e, ReasoningDone) for e in events):
                    reasoning_tokens = tokens
                yield from events
        finally:
            chunks.close()
        events = parser.close()
        yield from events
        cut_off = any(isinstance(e, ReasoningDone) and e.cut_off for e in events)
        if reasoning_tokens is None:
            reasoning_tokens = tokens if cut_off else 0
        yield Finished(
            Stats(
                prompt_tokens=len(prompt.input_ids),
                new_tokens=tokens,
                reasoning_tokens=reasoning_tokens,
                answer_tokens=tokens - reasoning_tokens,
                time_to_first_token=first,
                seconds=time.monotonic() - started,
                hit_token_limit=tokens >= params.max_new_tokens,
                reasoning_cut_off=cut_off,
                stopped=cancel.is_set() and tokens < params.max_new_tokens,
                turns_dropped=prompt.turns_dropped,
                tokens_at_first_text=first_tokens,
                reasoning_closed_by_app=closed_by_app,
            )
        )
        if loaded.device == "cpu":  # after the answer is out: what its generation freed goes back to the OS
            release_freed_memory()

    def _generate(
        self,
        loaded: LoadedModel,
        input_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event,
        use_adapter: bool,
        style: PromptStyle,
    ) -> Iterator[Chunk]:
        """The backend's chunks, and for a prompt that opened the reasoning, the answer after a reasoning left open.

        The primed base sometimes ends its turn (a stop text, EOS) without writing ``</think>``: its reasoning then
        stands with no answer (3 of 36 questions in the eval). As "budget forcing" does for reasoning models, its
        text and the closing tag then go back in as prompt, and it writes the answer with the tokens left. The
        tag arrives as a ClosingTag chunk, so the stats can say the app closed the reasoning.
        """
        backend = self.backend(loaded, style.stop_texts)
        chunks = backend.stream(input_ids, params, cancel, use_adapter)
        written: list[str] = []
        tokens = 0
        try:
            for chunk in chunks:
                written.append(chunk.text)
                tokens = chunk.tokens
                yield chunk
        finally:
            chunks.close()
        text = "".join(written)
        left = params.max_new_tokens - tokens
        if not style.opens_reasoning or CLOSE_TAG in text.lower() or left <= 0 or cancel.is_set():
            return
        closing = f"\n{CLOSE_TAG}\n"
        yield ClosingTag(closing, tokens)
        ids = input_ids + encode_text(loaded.tokenizer, text.rstrip() + closing)
        answer = backend.stream(ids, replace(params, max_new_tokens=left), cancel, use_adapter)
        try:
            for chunk in answer:
                yield Chunk(chunk.text, tokens + chunk.tokens)
        finally:
            answer.close()

    def ask(
        self,
        question: str,
        history: Sequence[Turn] = (),
        params: GenerationParams | None = None,
        use_adapter: bool = True,
    ) -> Answer:
        """Run a whole request; the final answer, the reasoning and the stats."""
        events = list(self.stream(question, history, params, use_adapter))
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
        stats = next((e.stats for e in events if isinstance(e, Finished)), None)
        return Answer(answer.strip(), reasoning.strip(), stats, events)
