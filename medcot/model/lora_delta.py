"""The base model from merged LoRA weights: the adapter's low-rank factors are kept when it is merged, and forward
hooks take ``scaling * B(A x)`` off each merged layer's output while base answers run.

Merged weights decode fastest, a second copy of the base doubles the memory, an unmerged adapter slows every answer
(README: merged 24.7 ms/token, base by subtraction 28.3, unmerged 32.2; +14.5 MB); peft's unmerge/merge take 19.4 s
a switch against 0.7 ms for the hooks, and the weights drift (docs/benchmark.md)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

if TYPE_CHECKING:
    from peft import PeftModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Factors:
    a: torch.Tensor  # r x in
    b: torch.Tensor  # out x r
    scaling: float


class LoraDelta:
    """A plain LoRA adapter's factors, by the name of the layer each updates in the merged model."""

    def __init__(self, factors: dict[str, _Factors]) -> None:
        self.factors = factors
        self._handles: list[RemovableHandle] = []

    @classmethod
    def from_peft(cls, peft_model: PeftModel) -> LoraDelta | None:
        """The factors of an unmerged PeftModel's active adapter (call before merging); None when it is not plain
        LoRA on Linear layers (DoRA and other variants, biases, embedding LoRA, whole modules): no undoing those."""
        from peft.tuners.lora.layer import Linear as LoraLinear
        from peft.tuners.lora.layer import LoraLayer

        adapter = peft_model.active_adapter
        if getattr(peft_model, "modules_to_save", None):
            log.info("adapter trains whole modules: the base cannot be recovered from merged weights")
            return None
        factors: dict[str, _Factors] = {}
        for name, module in peft_model.get_base_model().named_modules():
            if isinstance(module, LoraLayer) and adapter in getattr(module, "lora_embedding_A", {}):
                return None
            if not isinstance(module, LoraLayer) or adapter not in module.lora_A:
                continue
            plain = (
                type(module) is LoraLinear
                and adapter not in getattr(module, "lora_variant", {})
                and module.lora_B[adapter].bias is None
                and not getattr(module, "fan_in_fan_out", False)
            )
            if not plain:
                log.info("adapter layer %s is not plain LoRA: the base cannot be recovered from merged weights", name)
                return None
            factors[name] = _Factors(
                module.lora_A[adapter].weight.detach().clone(),
                module.lora_B[adapter].weight.detach().clone(),
                float(module.scaling[adapter]),
            )
        return cls(factors) if factors else None

    def to(self, device: str | torch.device) -> LoraDelta:
        """The factors moved to where the model runs (in place)."""
        self.factors = {name: _Factors(f.a.to(device), f.b.to(device), f.scaling) for name, f in self.factors.items()}
        return self

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module) -> None:
        """From now on the model (the merged one) computes the base model's outputs."""
        if self._handles:
            return
        try:
            for name, factors in list(self.factors.items()):
                layer = model.get_submodule(name)
                device = layer.weight.device
                if factors.a.device != device:  # the model was moved after loading (normally they move with it)
                    factors = self.factors[name] = _Factors(
                        factors.a.to(device), factors.b.to(device), factors.scaling
                    )
                self._handles.append(layer.register_forward_hook(_subtract(factors)))
        except Exception:
            self.detach()
            raise

    def detach(self) -> None:
        """Back to the merged (fine-tuned) model."""
        while self._handles:
            self._handles.pop().remove()

    @property
    def nbytes(self) -> int:
        return sum(f.a.nbytes + f.b.nbytes for f in self.factors.values())


def _subtract(factors: _Factors) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], torch.Tensor]:
    def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        x = args[0]
        update = F.linear(F.linear(x.to(factors.a.dtype), factors.a), factors.b) * factors.scaling
        return output - update.to(output.dtype)

    return hook


# Each fused matrix's LoRA update: A stacked (ranks x in) and B block-diagonal, scaled (out x ranks).
FusedDelta = dict[str, tuple[torch.Tensor, torch.Tensor]]
FUSED_GROUPS = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o": ("self_attn.o_proj",),
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": ("mlp.down_proj",),
}


def fused_factors(delta: LoraDelta, model: nn.Module) -> list[FusedDelta]:
    """``delta``'s factors per layer and fused matrix, as the static step (static_decode.py) fuses Q/K/V and
    gate/up; refuses factors of any other layer (the head, embeddings)."""
    factors = {name.removeprefix("base_model.model."): f for name, f in delta.factors.items()}
    arranged: list[FusedDelta] = []
    for index in range(len(model.model.layers)):
        layer: FusedDelta = {}
        for group, names in FUSED_GROUPS.items():
            members = [(name, factors.pop(f"model.layers.{index}.{name}", None)) for name in names]
            if all(f is None for _, f in members):
                continue
            modules = [model.model.layers[index].get_submodule(name) for name, _ in members]
            rows = [module.weight.shape[0] for module in modules]
            ranks = [0 if f is None else f.a.shape[0] for _, f in members]
            device = modules[0].weight.device
            a = torch.zeros(sum(ranks), modules[0].weight.shape[1], device=device)
            b = torch.zeros(sum(rows), sum(ranks), device=device)
            row = rank = 0
            for (_, f), count, r in zip(members, rows, ranks, strict=True):
                if f is not None:
                    a[rank : rank + r] = f.a.float()
                    b[row : row + count, rank : rank + r] = f.b.float() * f.scaling
                row, rank = row + count, rank + r
            layer[group] = (a, b)
        arranged.append(layer)
    if factors:
        raise ValueError(f"the adapter also updates {', '.join(sorted(factors)[:3])}, which the static step lacks")
    return arranged
