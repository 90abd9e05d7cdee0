"""The static decode step exported with torch.export, for ahead-of-time compilation (AOTInductor), and run through it.

On ZeroGPU nothing may compile at request time (the GPU worker is forked per request), so medcot.zerogpu compiles
this export once at startup (spaces.aoti_compile; on the CPU torch._inductor.aoti_compile_and_package compiles it).
Here: the step as a module (StepModule) and its export, a check that a compiled step decodes the eager step's greedy
tokens, and the generator's step that runs it (AotStep). The KV cache tensors are inputs the step writes in place:
AOTInductor keeps those writes (tests/test_exported_step.py), so the step returns the hidden state alone.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from medcot.model.compiled_step import FallbackStep
from medcot.model.static_decode import StaticDecoder

EXAMPLE_LENGTH = 64  # the example cache's full-attention length (dynamic: any length runs)
CHECK_PROMPT, CHECK_TOKENS = 8, 8  # the agreement check: a prompt of 8 ids, then 8 greedy tokens


class StepModule(nn.Module):
    """StaticDecoder.step_hidden as a module's forward, for torch.export and spaces.aoti_apply; ``base`` is fixed
    (one program per adapter state)."""

    def __init__(self, decoder: StaticDecoder, base: bool = False) -> None:
        super().__init__()
        self.decoder, self.base = decoder, base

    def forward(
        self,
        token: torch.Tensor,
        position: torch.Tensor,
        keys: list[torch.Tensor],
        values: list[torch.Tensor],
        ring_positions: torch.Tensor,
    ) -> torch.Tensor:
        return self.decoder.step_hidden(token, position, keys, values, ring_positions, self.base)


def export_step(decoder: StaticDecoder, base: bool = False) -> torch.export.ExportedProgram:
    """The step exported for the weights' device (its example: the first token after one, over an empty cache), the
    full-attention layers' cache length dynamic."""
    cache = decoder.new_cache(EXAMPLE_LENGTH)
    token, position = (torch.tensor([n], device=decoder.device) for n in (0, 1))
    example = (token, position, cache.keys, cache.values, cache.ring_positions)
    slots = torch.export.Dim("slots", min=2, max=decoder.max_positions)
    per_layer = [None if layer.sliding else {2: slots} for layer in decoder.layers]
    with torch.no_grad():
        return torch.export.export(
            StepModule(decoder, base), example, dynamic_shapes=(None, None, per_layer, per_layer, None)
        )


def disagreement(decoder: StaticDecoder, layers: Callable[..., torch.Tensor], base: bool = False) -> str | None:
    """None when ``layers`` (called as StepModule.forward) decode the eager step's greedy tokens after a short
    prompt, else what differs: a compiled program is never trusted unchecked."""
    prompt = torch.arange(1, CHECK_PROMPT + 1, device=decoder.device)
    made: dict[str, list[int]] = {}
    with torch.inference_mode():  # as generations run
        for name in ("eager", "compiled"):
            cache = decoder.new_cache(CHECK_PROMPT + CHECK_TOKENS)
            logits, tokens = decoder.prefill(prompt, cache, base), []
            for position in range(CHECK_PROMPT, CHECK_PROMPT + CHECK_TOKENS):
                token = logits.argmax(-1)
                tokens.append(int(token))
                at = torch.tensor([position], device=decoder.device)
                if name == "eager":
                    logits = decoder.step(token, at, cache, base)
                else:
                    logits = decoder.head(layers(token, at, cache.keys, cache.values, cache.ring_positions))
            made[name] = tokens
    if made["eager"] == made["compiled"]:
        return None
    return f"the compiled step decodes {made['compiled']}, the eager step {made['eager']}"


class AotStep(FallbackStep):
    """A generator's step through ahead-of-time compiled decoder layers: ``ready[base]`` a StepModule whose forward
    spaces.aoti_apply replaced, or a loaded AOTInductor package; eager where there is none or once one failed.

    The calls run in one context kept by the step: spaces keeps its loaded package in a ContextVar, and each
    generation's thread (a fresh context) would load it again; the lock lets one thread at a time in it.
    """

    def __init__(self, decoder: StaticDecoder, ready: dict[bool, Callable[..., torch.Tensor]], status: str) -> None:
        super().__init__(decoder)
        self.ready, self.status = ready, status
        self._context = contextvars.Context()
        self._lock = threading.Lock()

    def run_layers(self, layers: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
        with self._lock:
            return self._context.run(layers, *inputs)
