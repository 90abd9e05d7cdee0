"""The seam between the app and the model: a Backend says what it is, whether the base model can answer beside it
(and why not), and streams prompt token ids to text chunks. The local model (medcot.backends.local) answers unless
the environment selects one of BACKENDS; a new backend is one module here plus its line in BACKENDS.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from medcot.backends import server
from medcot.chunks import Chunk
from medcot.config import BackendSettings, GenerationParams, Settings
from medcot.model.progress import Progress

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Backend(Protocol):
    tokenizer: PreTrainedTokenizerBase  # renders the prompt here, whoever generates
    base_id: str
    adapter_id: str | None  # None: the base model answers alone
    embedded: bool  # the embedded Gemma 3 270M base (it gets its own prompt when alone)
    runs_base_beside: bool  # a base answer can run at the same time as a fine-tuned one
    status_may_change: bool  # its status line can still change by itself: the page keeps polling it
    notes: list[str]  # said once, beside what was loaded
    base_alone: bool  # no adapter answers: the base model runs alone (its prompt, the page's labels say so)

    def describe(self) -> str:
        """The status line: what answers, or why it cannot."""

    def compare_unavailable(self) -> str | None:
        """Why the base model cannot answer beside the fine-tuned one (a sentence for users), or None when it can."""

    def facts(self) -> dict[str, Any]:
        """What answers, for the export: base, adapter, kind, merged, device, dtype."""

    def stream(
        self,
        input_ids: Sequence[int],
        params: GenerationParams,
        cancel: threading.Event,
        use_adapter: bool,
        stop_texts: Sequence[str],
    ) -> Iterator[Chunk]:
        """Text chunks with the tokens generated so far, ending before any of ``stop_texts``; nothing at all when
        ``cancel`` was set before it started. Setting ``cancel`` or closing the iterator stops generation."""


class BackendModule(Protocol):
    """What each module in BACKENDS provides."""

    def settings_from_env(self, env: Mapping[str, str]) -> BackendSettings | None:
        """Its own settings, or None when the environment does not select it; raises ConfigError when bad."""

    def selected(self, settings: Settings) -> bool: ...

    def load(self, settings: Settings, progress: Progress) -> Backend:
        """Loaded; raises ModelLoadError with a readable message."""


# The first of these the environment selects answers, else the local model (not listed: it imports torch).
BACKENDS: tuple[BackendModule, ...] = (server,)


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings.from_env with the settings of the backend the environment selects, read by its module."""
    env = os.environ if env is None else env
    return Settings.from_env(env, next(filter(None, (module.settings_from_env(env) for module in BACKENDS)), None))


def load_backend(settings: Settings, progress: Progress) -> Backend:
    """The backend the settings select, loaded; raises ModelLoadError with a readable message."""
    for module in BACKENDS:
        if module.selected(settings):
            return module.load(settings, progress)
    from medcot.backends.local import LocalBackend
    from medcot.model.loading import load_model

    return LocalBackend(load_model(settings, progress), settings.decode)
