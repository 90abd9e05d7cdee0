"""Where the tokens come from: the engine hands a backend prompt token ids and gets text chunks back.

The engine keeps everything around generation (question checks, the prompt, the reasoning parser, the stats), so a
second backend (a model server) is added beside medcot.backends.local without touching the engine's callers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

from medcot.chunks import Chunk
from medcot.config import GenerationParams


class Backend(Protocol):
    def stream(
        self, input_ids: Sequence[int], params: GenerationParams, cancel: threading.Event, use_adapter: bool
    ) -> Iterator[Chunk]:
        """Text chunks with the tokens generated so far; nothing at all when ``cancel`` was set before it started.

        Setting ``cancel`` or closing the iterator stops generation within a token.
        """
        ...
