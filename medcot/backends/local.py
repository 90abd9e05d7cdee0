"""The local backend: the loaded model in this process, with the adapter switched per request."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from medcot.config import GenerationParams
from medcot.generation import Chunk, stream_generate
from medcot.model.adapter_switch import AdapterSwitch
from medcot.model.loading import LoadedModel
from medcot.static_generation import static_generator


class LocalBackend:
    """Generates with ``loaded``; base-model requests turn its adapter off for their whole generation."""

    def __init__(self, loaded: LoadedModel, stop_texts: Sequence[str], decode: str = "auto") -> None:
        self.loaded = loaded
        self.stop_texts = tuple(stop_texts)
        switchable = loaded.has_adapter and (not loaded.merged or loaded.base_delta is not None)
        # None: nothing switches (no adapter, or merged weights without a delta), so requests share the model freely
        self.switch = AdapterSwitch(loaded.model, loaded.base_delta if loaded.merged else None) if switchable else None
        delta = loaded.base_delta if loaded.merged else None
        self.static = static_generator(loaded.model, loaded.device, delta, decode)  # None: generate() decodes

    def stream(
        self, input_ids: Sequence[int], params: GenerationParams, cancel: threading.Event, use_adapter: bool
    ) -> Iterator[Chunk]:
        if self.switch is None:
            yield from self._generate(input_ids, params, cancel)
            return
        with self.switch.use(use_adapter, cancel) as holding:
            if holding:  # not holding: stopped while another request had the model in the other adapter state
                yield from self._generate(input_ids, params, cancel)

    def _generate(self, ids: Sequence[int], params: GenerationParams, cancel: threading.Event) -> Iterator[Chunk]:
        chunks = stream_generate(
            self.loaded.model,
            self.loaded.tokenizer,
            list(ids),
            params,
            cancel,
            stop_texts=self.stop_texts,
            static=self.static,
        )
        try:
            yield from chunks
        finally:
            chunks.close()
