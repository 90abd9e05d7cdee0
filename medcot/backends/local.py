"""The local backend: the loaded model in this process, with the adapter switched per request."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from medcot.chunks import Chunk
from medcot.config import GenerationParams
from medcot.generation import stream_generate
from medcot.model.adapter_switch import AdapterSwitch
from medcot.model.loading import LoadedModel
from medcot.model.memory import release_freed_memory
from medcot.model.step_rows import rows_of
from medcot.static_generation import static_generator


class LocalBackend:
    """Generates with ``loaded``; base-model requests turn its adapter off for their whole generation."""

    runs_base_beside = False  # one copy of the weights: the base answers after the fine-tune, never beside it

    def __init__(self, loaded: LoadedModel, decode: str = "auto") -> None:
        self.loaded = loaded
        self.tokenizer, self.base_id, self.adapter_id = loaded.tokenizer, loaded.base_id, loaded.adapter_id
        self.embedded, self.notes, self.base_alone = loaded.embedded, loaded.notes, loaded.kind == "base"
        # None: nothing switches (no adapter, or merged weights without a delta), so requests share the model freely
        self.switch = AdapterSwitch(loaded.model, loaded.base_delta) if self.compare_unavailable() is None else None
        # None: generate() decodes. base_delta is set only for merged weights: the step subtracts it for base answers.
        rows = rows_of(loaded.dtype)  # the CPU modes q8-, int8- and bf16-int4head
        self.static = static_generator(loaded.model, loaded.device, loaded.base_delta, decode, rows=rows)

    def describe(self) -> str:
        return f"{self.loaded.describe()}{self._decode_note()}. {' '.join(self.loaded.notes)}".strip()

    @property
    def status_may_change(self) -> bool:
        """While the decode step compiles in the background (25-40 s on 2 cores, 5 s from its cache)."""
        compiled = getattr(self.static, "compiled", None)
        return compiled is not None and not compiled.finished.is_set()

    def _decode_note(self) -> str:
        """Why answers are slower than they will be: the compiled step not in yet, or not at all."""
        compiled = getattr(self.static, "compiled", None)
        if compiled is None:
            return ""
        if not compiled.finished.is_set():
            return "; the decode step is compiling in the background: answers are slower until it is in"
        if self.static.mode != "compiled":
            return "; the decode step could not be compiled: answers are decoded eagerly, slower"
        return ""

    def compare_unavailable(self) -> str | None:
        loaded = self.loaded
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

    def facts(self) -> dict[str, Any]:
        m = self.loaded
        return dict(base=m.base_id, adapter=m.adapter_id, kind=m.kind, merged=m.merged, device=m.device, dtype=m.dtype)

    def stream(
        self,
        input_ids: Sequence[int],
        params: GenerationParams,
        cancel: threading.Event,
        use_adapter: bool,
        stop_texts: Sequence[str],
    ) -> Iterator[Chunk]:
        switched = self.switch.use(use_adapter, cancel) if self.switch else contextlib.nullcontext(True)
        with switched as holding:
            if holding:  # not holding: stopped while another request had the model in the other adapter state
                model, tokenizer = self.loaded.model, self.loaded.tokenizer
                yield from stream_generate(
                    model, tokenizer, list(input_ids), params, cancel, stop_texts=stop_texts, static=self.static
                )
        if self.loaded.device == "cpu":  # after the answer is out: what its generation freed goes back to the OS
            release_freed_memory()
