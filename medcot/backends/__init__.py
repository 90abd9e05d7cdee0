"""The seam between the app and the model: a Backend says what it is, whether the base model can answer beside it
(and why not), and streams prompt token ids to text chunks.

Two backends: medcot.backends.local (the model in this process) and medcot.backends.server (a model server). The
engine keeps everything around generation (question checks, the prompt, the reasoning parser, the stats), so a new
backend is one module here plus its line in load_backend.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from medcot.chunks import Chunk
from medcot.config import GenerationParams, Settings
from medcot.model.progress import Progress

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


class Backend(Protocol):
    tokenizer: PreTrainedTokenizerBase  # renders the prompt here, whoever generates
    base_id: str
    adapter_id: str | None  # None: the base model answers alone
    embedded: bool  # the embedded Gemma 3 270M base (it gets its own prompt when alone)
    runs_base_beside: bool  # a base answer can run at the same time as a fine-tuned one
    notes: list[str]  # said once, beside what was loaded
    base_alone: bool  # no adapter answers: the base model runs alone (its prompt, the page's labels say so)

    def describe(self) -> str:
        """The status line: what answers, or why it cannot."""
        ...

    def compare_unavailable(self) -> str | None:
        """Why the base model cannot answer beside the fine-tuned one (a sentence for users), or None when it can."""
        ...

    def facts(self) -> dict[str, Any]:
        """What answers, for the export: base, adapter, kind, merged, device, dtype."""
        ...

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
        ...


def load_backend(settings: Settings, progress: Progress) -> Backend:
    """The backend the settings name, loaded; raises ModelLoadError with a readable message.

    The local backend is imported only when used: server mode imports no torch of ours.
    """
    if settings.server_mode:
        from medcot.backends.server import connect

        return connect(settings, progress)
    from medcot.backends.local import LocalBackend
    from medcot.model.loading import load_model

    return LocalBackend(load_model(settings, progress), settings.decode)
