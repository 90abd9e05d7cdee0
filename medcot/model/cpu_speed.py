"""Faster CPU decoding for Gemma 3 270M-class models, with greedy output kept equal to float32's.

On CPU a token's speed is set by the bytes of weights it reads (the 640x262144 output projection is ~60% of a float32
token): float16 matrices (~3x fewer bytes per token; activations, norms and the residual stream stay float32), and an
int8 or int4 output projection whose best candidates are rescored exactly (rescored_heads.py). Measured with
`python -m benchmarks.bench_cpu`; what was not kept: docs/benchmark.md, "Notes moved from medcot/ (speed)".
"""

from __future__ import annotations

import functools
import logging
import timeit
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medcot.model.memory import release_freed_memory
from medcot.model.rescored_heads import RescoredHead, RescoredInt4Head, RescoredInt8Head

log = logging.getLogger(__name__)

# auto: the fastest mode that passed the quality check (tests/test_cpu_speed.py) on this machine's kernels.
# q8-/bf16-/int8-int4head: f16-int4head whose static step reads copies of the decoder matrices (step_rows.py).
CPU_MODES = (
    "auto",
    "f32",
    "f16",
    "f16-int8head",
    "f32-int8head",
    "f16-int4head",
    "bf16-int4head",
    "int8-int4head",
    "q8-int4head",
)
# Rows at or below which float16 weights are multiplied directly (decoding: bandwidth bound); for more rows (a
# prompt) the CPU's f16 matrix-matrix kernel is ~4x slower than f32's, so the weight is upcast.
_F16_MAX_ROWS = 2


class HalfLinear(nn.Module):
    """A Linear layer whose weight is stored in float16, with float32 inputs and outputs."""

    def __init__(self, weight: nn.Parameter, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.weight = weight  # float16; may be shared (tied embeddings)
        self.bias = bias
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.numel() // x.shape[-1] <= _F16_MAX_ROWS:
            out = F.linear(x.to(torch.float16), self.weight).to(x.dtype)
            return out if self.bias is None else out + self.bias
        return F.linear(x, self.weight.to(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=float16"


def optimize_for_cpu(model: Any, mode: str = "auto") -> tuple[Any, str]:
    """Apply `mode` to a float32 model on CPU (or one from load_half), in place; return it and the mode applied.

    Call it after LoRA adapters are merged (unmerged adapters work but keep their own float32 matmuls). The
    result is for inference only: it cannot be trained or saved with save_pretrained.
    """
    first = next(model.parameters())
    if first.device.type != "cpu":
        if mode == "auto":
            return model, str(first.dtype).removeprefix("torch.")
        raise ValueError(f"CPU mode {mode!r} needs a model on the CPU, not {first.device}.")
    if any(isinstance(module, HalfLinear | RescoredHead) for module in model.modules()):
        raise ValueError("This model was already optimized for CPU.")
    mode = resolve_mode(mode)
    if mode == "f32":
        return model, mode
    if mode.endswith("head"):
        try:
            _quantize_head(model, RescoredInt4Head if mode.endswith("int4head") else RescoredInt8Head)
        except Exception as exc:  # torch built without an int8/int4 kernel, or torch.ao removed in a later release
            log.warning("quantized output projection unavailable (%s); keeping it unquantized", exc)
            mode = mode.rsplit("-", 1)[0]
    if half_weights(mode):
        _to_half(model)
        _release_checkpoint_mmap(model)
    release_freed_memory()
    return model, mode


def half_weights(mode: str) -> bool:
    """Whether the model's matrices are float16 in ``mode``."""
    return mode.startswith(("f16", "bf16", "int8", "q8"))


def resolve_mode(mode: str) -> str:
    """The concrete mode `mode` stands for on this machine ("auto" picks one); refuses unknown names."""
    if mode not in CPU_MODES:
        raise ValueError(f"Unknown CPU mode {mode!r}; choose one of {', '.join(CPU_MODES)}.")
    if mode != "auto":
        return mode
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        # Measured there: f16 products 3x f32's, int4 the fastest head (untested elsewhere), int8 blocks compiled.
        return "q8-int4head"
    return "f16-int8head" if _f16_is_fast() else "f32-int8head"


@functools.cache  # one answer per process: loading asks before and after reading the weights
def _f16_is_fast() -> bool:
    """Whether float16 weights decode about as fast as float32 on this CPU (they always take half the memory):
    timed on synthetic weights the size of the 270M's MLP, best of several runs so a busy machine cannot flip it."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(2048, 640, generator=generator) for _ in range(24)]  # ~125 MB: more than a CPU cache
    halves = [w.half() for w in weights]

    def best(ws: list[torch.Tensor], dtype: torch.dtype) -> float:
        row = torch.ones(1, 640, dtype=dtype)
        with torch.inference_mode():
            return min(timeit.repeat(lambda: [F.linear(row, w) for w in ws], number=1, repeat=5))

    f32, f16 = best(weights, torch.float32), best(halves, torch.float16)
    log.info("f32 vs f16 matrix-vector probe: %.1f ms vs %.1f ms", f32 * 1e3, f16 * 1e3)
    return f16 < 1.25 * f32


def _quantize_head(model: Any, kind: type[RescoredHead]) -> None:
    weight = model.get_output_embeddings().weight  # shared with a tied embedding, which must stay tied
    model.set_output_embeddings(kind(weight))
    if model.get_output_embeddings().weight is not weight:
        raise RuntimeError("output projection lost its tie to the embedding")


def _to_half(model: Any) -> None:
    """Every Linear (and a tied embedding) to float16; everything between matmuls stays float32."""
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    old = embedding.weight
    embedding.weight = nn.Parameter(old.detach().to(torch.float16), requires_grad=False)
    # Lookups come out in f16; the rest of the network must keep running in f32.
    embedding.register_forward_hook(lambda module, args, output: output.float())
    if isinstance(head, RescoredHead) and head.weight is old:
        head.weight = embedding.weight
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                tied = child.weight is old  # an untouched tied output projection
                weight = embedding.weight if tied else nn.Parameter(child.weight.detach().half(), requires_grad=False)
                setattr(parent, name, HalfLinear(weight, child.bias))


def _release_checkpoint_mmap(model: Any) -> None:
    """Copy the float32 tensors still loaded from the checkpoint (norms), so its memory map can be closed: a
    safetensors mmap stays while any view of it lives, and kept the whole ~1 GB f32 file in the process's RSS."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype == torch.float32:
                tensor.data = tensor.data.clone()
