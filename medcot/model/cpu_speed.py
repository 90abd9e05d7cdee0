"""Faster CPU decoding for Gemma 3 270M-class models, with greedy output kept equal to float32's.

Decoding one token reads every weight once, so on CPU its speed is set by how many bytes the weights take; the
640x262144 output projection alone is ~60% of a float32 token. What was measured (2 cores, 135-token prompt,
greedy, 64 new tokens; `python -m benchmarks.bench_cpu`), and what it means for the modes below:

* float16 weights for every matmul, activations, norms, attention and the residual stream kept in float32:
  ~3x fewer bytes per token than f32, and the CPU's f16 matrix-vector kernel runs near memory bandwidth (the
  bf16 one does not: bf16 was slower, and its 8-bit mantissa flipped greedy tokens that f16 keeps).
* int8 output projection (dynamic quantization), with the top candidates rescored from the real weights: int8
  alone moves logits by up to ~6 and flips near-ties; recomputing its best `_CANDIDATES` logits exactly makes
  the greedy pick match the unquantized projection (the true best token ranked at most 6th among int8 logits).
* Memory: half_loading.load_half reads a checkpoint straight into this layout (f16 weights, f32 norms), so the
  270M app peaks at ~1.5 GB instead of the 2.3 GB of loading float32 and converting (memory.py: what else keeps
  the process small).
* Not kept: dynamic int8 for the decoder layers (fastest, but Gemma's activation outliers wreck per-tensor
  activation scales: greedy output differed from f32 from the first token on every test prompt); whole-model
  bf16; static KV cache (no gain without compilation); torch.compile (minutes to compile on 2 cores, far over
  the 15 s cold-start budget); thread settings (PyTorch's default of one thread per core was best).
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medcot.model.memory import release_freed_memory

log = logging.getLogger(__name__)

# auto: the fastest mode that passed the quality check (tests/test_cpu_speed.py) on this machine's kernels.
CPU_MODES = ("auto", "f32", "f16", "f16-int8head", "f32-int8head")
# Rows at or below which float16 weights are multiplied directly: decoding (1 row per sequence) is bandwidth
# bound and f16 halves the bytes, but the CPU's f16 matrix-matrix kernel is ~4x slower than f32 for a prompt.
_F16_MAX_ROWS = 2
# How many int8 logits are recomputed exactly; the f32-best token was at most 6th among int8 logits.
_CANDIDATES = 64
# Rows of a weight read, converted or quantized at a time, so no full-size temporary copy is ever made.
_CHUNK_BYTES = 32 * 2**20
# Rows of the output projection packed per int8 block (262144 rows: 8 blocks of 21 MB).
_HEAD_BLOCK = 32768


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


class RescoredInt8Head(nn.Module):
    """Output projection computed in int8, with its `candidates` best logits recomputed from the real weight.

    Greedy decoding then picks what the unquantized projection would, unless that token is outside the int8
    top-`candidates` (not seen in testing: worst rank 6). Sampling sees exact logits where the probability
    mass is and int8 approximations in the far tail.
    """

    def __init__(self, weight: nn.Parameter, candidates: int = _CANDIDATES) -> None:
        super().__init__()
        self.weight = weight  # shared with the input embedding: rescoring reads rows of it, nothing is copied
        self.candidates = candidates
        # torch's int8 kernels called directly, as torch.ao's dynamic quantized Linear calls them (that module packs
        # a full-size placeholder first), on blocks of rows: packing copies its input, and a block at a time keeps
        # that transient copy at a block's size instead of the whole 168 MB.
        with warnings.catch_warnings():
            # torch.ao quantization warns that it will move to torchao; these are still torch's CPU int8 kernels.
            warnings.filterwarnings("ignore", message=r".*(deprecated|torchao).*")
            self.packed = [
                torch.ops.quantized.linear_prepack(_quantize_rows(weight[start : start + _HEAD_BLOCK].detach()), None)
                for start in range(0, weight.shape[0], _HEAD_BLOCK)
            ]

    def int8(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the int8 weight alone (activations quantized per call, reduced range as torch.ao does)."""
        blocks = [torch.ops.quantized.linear_dynamic(hidden, packed, reduce_range=True) for packed in self.packed]
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        logits = self.int8(hidden)
        top = logits.topk(min(self.candidates, logits.shape[-1]), dim=-1, sorted=False).indices
        exact = torch.einsum("...d,...kd->...k", hidden, self.weight[top].float())
        return logits.scatter_(-1, top, exact)


def _quantize_rows(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 with a scale per row (vocabulary rows differ a lot in norm), as torch's per-channel weight
    observer computes it, but a chunk of rows at a time: its float32 copy of a 262144-row weight is 670 MB."""
    values = torch.empty(weight.shape, dtype=torch.int8)
    scales = torch.empty(weight.shape[0], dtype=torch.float64)
    per_chunk = max(1, _CHUNK_BYTES // (weight.shape[1] * 4))
    for start in range(0, weight.shape[0], per_chunk):
        rows = weight[start : start + per_chunk].float()
        scale = (rows.abs().amax(dim=1).double() / 127.5).clamp_min(torch.finfo(torch.float32).eps)
        zeros = torch.zeros(len(rows), dtype=torch.int64)
        values[start : start + len(rows)] = torch.quantize_per_channel(rows, scale, zeros, 0, torch.qint8).int_repr()
        scales[start : start + len(rows)] = scale
    return torch._make_per_channel_quantized_tensor(values, scales, torch.zeros_like(scales, dtype=torch.int64), 0)


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
    if any(isinstance(module, HalfLinear | RescoredInt8Head) for module in model.modules()):
        raise ValueError("This model was already optimized for CPU.")
    mode = resolve_mode(mode)
    if mode == "f32":
        return model, mode
    if mode.endswith("int8head"):
        try:
            _quantize_head(model)
        except Exception as exc:  # torch built without an int8 engine, or torch.ao removed in a later release
            log.warning("int8 output projection unavailable (%s); keeping it unquantized", exc)
            mode = mode.removesuffix("-int8head")
    if mode.startswith("f16"):
        _to_half(model)
        _release_checkpoint_mmap(model)
    release_freed_memory()
    return model, mode


def resolve_mode(mode: str) -> str:
    """The concrete mode `mode` stands for on this machine ("auto" picks one); refuses unknown names."""
    if mode not in CPU_MODES:
        raise ValueError(f"Unknown CPU mode {mode!r}; choose one of {', '.join(CPU_MODES)}.")
    if mode != "auto":
        return mode
    return "f16-int8head" if _f16_is_fast() else "f32-int8head"


@functools.cache  # one answer per process: loading asks before and after reading the weights
def _f16_is_fast() -> bool:
    """Whether float16 weights decode at least about as fast as float32 here (they always take half the memory).

    x86 CPUs with AVX-512 have the fast f16 matrix-vector kernel (measured: 3x f32). Elsewhere the kernels are
    timed on synthetic weights the size of the 270M's MLP, best of several runs so a busy machine cannot flip it.
    """
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return True
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


def _quantize_head(model: Any) -> None:
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    tied = embedding is not None and head.weight is embedding.weight
    model.set_output_embeddings(RescoredInt8Head(head.weight))
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
    if isinstance(head, RescoredInt8Head) and head.weight is old:
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
