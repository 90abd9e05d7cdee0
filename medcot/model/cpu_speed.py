"""Faster CPU decoding for Gemma 3 270M-class models, with greedy output kept equal to float32's.

Decoding one token reads every weight once, so on CPU its speed is set by how many bytes the weights take; the
640x262144 output projection alone is ~60% of a float32 token. What was measured (2 cores, 135-token prompt,
greedy, 64 new tokens; `python -m benchmarks.bench_cpu`), and what it means for the modes below:

* float16 weights for every matmul, activations, norms, attention and the residual stream kept in float32:
  ~3x fewer bytes per token than f32, and the CPU's f16 matrix-vector kernel runs near memory bandwidth (plain
  bf16 products were slower, and rounding activations to its 8-bit mantissa flipped greedy tokens that f16 keeps;
  the static step's bf16 rows, model/step_rows.py, split each row high and low and are faster; its int8 blocks of
  32, read by the compiled step, are the fastest: q8-int4head, auto with AVX-512).
* int8 or int4 output projection, with the top candidates rescored from the real weights (rescored_heads.py):
  int8 alone moves logits by up to ~6 and flips near-ties; recomputing its best 64 logits exactly makes the
  greedy pick match the unquantized projection (the true best token ranked at most 6th among int8 logits). int4
  (128 rescored) reads half int8's bytes: 7.8 -> ~4.4 ms a token on 2 Xeon cores, same greedy tokens.
* Memory: half_loading.load_half reads a checkpoint straight into this layout (f16 weights, f32 norms), so the
  270M app peaks at ~1.5 GB instead of the 2.3 GB of loading float32 and converting (memory.py: what else keeps
  the process small).
* Not kept: dynamic int8 for the decoder layers (fastest, but Gemma's activation outliers wreck per-tensor
  activation scales: greedy output differed from f32 from the first token on every test prompt); whole-model
  bf16; transformers' static cache with torch.compile (452 s to compile, then no faster: issue 22; the static step,
  model/static_decode.py, compiles in ~25 s in the background instead); thread settings (PyTorch's default of one
  thread per core was best).
"""

from __future__ import annotations

import functools
import logging
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medcot.model.memory import release_freed_memory
from medcot.model.rescored_heads import RescoredHead, RescoredInt4Head, RescoredInt8Head

log = logging.getLogger(__name__)

# auto: the fastest mode that passed the quality check (tests/test_cpu_speed.py) on this machine's kernels.
# q8-/bf16-/int8-int4head: f16-int4head whose static decode step reads copies of the decoder matrices
# (model/step_rows.py, measured there): int8 blocks of 32 that the compiled step reads (auto with AVX-512, +110 MB),
# bfloat16 (+200 MB) or int8 a row (faster eagerly, not float32's tokens, +100 MB; opt-in).
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
# Rows at or below which float16 weights are multiplied directly: decoding (1 row per sequence) is bandwidth
# bound and f16 halves the bytes, but the CPU's f16 matrix-matrix kernel is ~4x slower than f32 for a prompt.
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
        # A prompt: upcasting the weight costs less than the slow f16 matrix-matrix kernel, and is more exact.
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
        # Measured there: f16 matrix-vector products 3x f32's, int4 (unknown elsewhere; int8 known good) the fastest
        # head, and int8 blocks for the compiled step (model/step_rows.py), which decodes eagerly from the f16
        # weights until it is built.
        return "q8-int4head"
    return "f16-int8head" if _f16_is_fast() else "f32-int8head"


@functools.cache  # one answer per process: loading asks before and after reading the weights
def _f16_is_fast() -> bool:
    """Whether float16 weights decode at least about as fast as float32 on this CPU without AVX-512 (they always
    take half the memory): the kernels timed on synthetic weights the size of the 270M's MLP, best of several runs
    so a busy machine cannot flip it."""
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(2048, 640, generator=generator) for _ in range(24)]  # ~125 MB: more than a CPU cache
    halves = [w.half() for w in weights]

    def best(ws: list[torch.Tensor], dtype: torch.dtype, repeats: int = 5) -> float:
        row = torch.ones(1, 640, dtype=dtype)
        times = []
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                for w in ws:
                    F.linear(row, w)
                times.append(time.perf_counter() - start)
        return min(times)

    f32, f16 = best(weights, torch.float32), best(halves, torch.float16)
    log.info("f32 vs f16 matrix-vector probe: %.1f ms vs %.1f ms", f32 * 1e3, f16 * 1e3)
    return f16 < 1.25 * f32


def _quantize_head(model: Any, kind: type[RescoredHead]) -> None:
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    tied = embedding is not None and head.weight is embedding.weight
    model.set_output_embeddings(kind(head.weight))
    if tied and model.get_output_embeddings().weight is not embedding.weight:
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
                if child.weight is old:  # an untouched tied output projection
                    half = HalfLinear(embedding.weight)
                else:
                    half = HalfLinear(nn.Parameter(child.weight.detach().to(torch.float16), requires_grad=False))
                    half.bias = child.bias
                setattr(parent, name, half)


def _release_checkpoint_mmap(model: Any) -> None:
    """Copy the float32 tensors still loaded from the checkpoint (norms), so its memory map can be closed.

    safetensors tensors are views of one mmap that stays mapped while any of them lives; after the f16
    conversion touched every page, that kept the whole ~1 GB f32 file counted in the process's RSS.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dtype == torch.float32:
                tensor.data = tensor.data.clone()
