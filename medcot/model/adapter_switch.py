"""The adapter switch: one shared model answers with the LoRA adapter on or off, never both at once."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel

    from medcot.model.lora_delta import LoraDelta


class AdapterSwitch:
    """Turns the LoRA adapter of the one shared model off for base-model requests, without mixing requests: every
    way of turning it off acts on the whole model (peft's ``disable_adapter()`` and ``adapter_names`` too, and
    medcot.model.lora_delta's hooks), so it changes only while no generation runs. Requests wanting the same state run
    together; one wanting the other holds back new arrivals until its turn (no starving)."""

    def __init__(self, model: PreTrainedModel | PeftModel, base_delta: LoraDelta | None = None) -> None:
        self.model = model
        self.base_delta = base_delta  # a LoraDelta for merged weights; None: an unmerged PeftModel
        self._changed = threading.Condition()
        self._enabled = True
        self._running = 0
        self._waiting = {True: 0, False: 0}
        self._adapter_off = contextlib.ExitStack()  # closing it turns the adapter back on

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
        if enabled:
            self._adapter_off.close()
        elif self.base_delta is not None:
            self.base_delta.attach(self.model)
            self._adapter_off.callback(self.base_delta.detach)
        else:
            self._adapter_off.enter_context(self.model.disable_adapter())
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
