"""The adapter switch: one shared model answers with the LoRA adapter on or off, never both at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from medcot.model.lora_delta import LoraDelta


class AdapterSwitch:
    """Turns the LoRA adapter of the one shared model off for base-model requests, without mixing requests.

    Both ways of turning it off act on the whole model, not per call: peft's ``disable_adapter()`` flips a flag on
    every LoRA layer (its mixed-batch ``adapter_names`` too registers hooks on the shared layers for the call's
    duration), and a merged adapter's factors are subtracted by hooks on the shared layers (medcot.model.lora_delta). A
    base generation running beside an adapter generation would change the other's output mid-answer. Requests that
    want the same state run together, as before; the state only changes while no generation runs. A request for the
    other state holds back new arrivals until it got its turn, so a stream of one kind never starves the other.
    """

    def __init__(self, model: PreTrainedModel | PeftModel, base_delta: LoraDelta | None = None) -> None:
        self.model = model
        self.base_delta = base_delta  # a LoraDelta for merged weights; None: an unmerged PeftModel
        self._changed = threading.Condition()
        self._enabled = True
        self._running = 0
        self._waiting = {True: 0, False: 0}
        self._disabled: contextlib.AbstractContextManager[Any] | None = None

    @property
    def adapter_enabled(self) -> bool:
        return self._enabled

    def _may_enter(self, enabled: bool) -> bool:
        other_waits = self._waiting[not enabled] > 0
        if self._running:
            return self._enabled == enabled and not other_waits
        return self._enabled != enabled or not other_waits  # idle, both kinds waiting: the state changes (turns)

    def _set(self, enabled: bool) -> None:
        if enabled == self._enabled:
            return
        if self.base_delta is not None:
            if enabled:
                self.base_delta.detach()
            else:
                self.base_delta.attach(self.model)
        elif enabled:
            disabled, self._disabled = self._disabled, None
            if disabled is not None:
                disabled.__exit__(None, None, None)
        else:
            self._disabled = self.model.disable_adapter()
            self._disabled.__enter__()
        self._enabled = enabled

    @contextlib.contextmanager
    def use(self, enabled: bool, cancel: threading.Event | None = None) -> Iterator[bool]:
        """Hold the model with the adapter on or off; yields False (holding nothing) if ``cancel`` is set first."""
        entered = False
        with self._changed:
            self._waiting[enabled] += 1
            try:
                while not self._may_enter(enabled):
                    if cancel is not None and cancel.is_set():
                        break
                    self._changed.wait(0.05)  # a timeout, so that a cancel is seen while waiting
                else:
                    self._set(enabled)
                    self._running += 1
                    entered = True
            finally:
                self._waiting[enabled] -= 1
                self._changed.notify_all()
        if not entered:
            yield False
            return
        try:
            yield True
        finally:
            with self._changed:
                self._running -= 1
                if not self._running and not any(self._waiting.values()):
                    self._set(True)  # idle: back to the model as loaded, for anyone who reads it directly
                self._changed.notify_all()
