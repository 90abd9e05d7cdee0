"""Faster CPU decoding for Gemma 3 270M-class models, with greedy output kept equal to float32's.

Decoding one token reads every weight once, so on CPU its speed is set by how many bytes the weights take; the
640x262144 output projection alone is ~60% of a float32 token. What was measured (2 cores, 135-token prompt,
greedy, 64 new tokens; `python -m medcot.bench_cpu`), and what it means for the modes below:

* float16 weights for every matmul, activations, norms, attention and the residual stream kept in float32:
  ~3x fewer bytes per token than f32, and the CPU's f16 matrix-vector kernel runs near memory bandwidth (the
  bf16 one does not: bf16 was slower, and its 8-bit mantissa flipped greedy tokens that f16 keeps).
* int8 output projection (dynamic quantization), with the top candidates rescored from the real weights: int8
  alone moves logits by up to ~6 and flips near-ties; recomputing its best `_CANDIDATES` logits exactly makes
  the greedy pick match the unquantized projection (the true best token ranked at most 6th among int8 logits).
* Not kept: dynamic int8 for the decoder layers (fastest, but Gemma's activation outliers wreck per-tensor
  activation scales: greedy output differed from f32 from the first token on every test prompt); whole-model
  bf16; static KV cache (no gain without compilation); torch.compile (minutes to compile on 2 cores, far over
  the 15 s cold-start budget); thread settings (PyTorch's default of one thread per core was best).
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# auto: the fastest mode that passed the quality check (tests/test_cpu_speed.py) on this machine's kernels.
CPU_MODES = ("auto", "f32", "f16", "f16-int8head", "f32-int8head")
# Rows at or below which float16 weights are multiplied directly: decoding (1 row per sequence) is bandwidth
# bound and f16 halves the bytes, but the CPU's f16 matrix-matrix kernel is ~4x slower than f32 for a prompt.
_F16_MAX_ROWS = 2
# How many int8 logits are recomputed exactly; the f32-best token was at most 6th among int8 logits.
_CANDIDATES = 64


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
        from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        self.weight = weight  # shared with the input embedding: rescoring reads rows of it, nothing is copied
        self.candidates = candidates
        source = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
        source.weight = nn.Parameter(weight.detach().float(), requires_grad=False)
        source.qconfig = per_channel_dynamic_qconfig  # a scale per vocabulary row: rows differ a lot in norm
        with warnings.catch_warnings():
            # torch.ao eager quantization warns that it will move to torchao; it is still torch's CPU int8 GEMV.
            warnings.filterwarnings("ignore", message=r".*(deprecated|torchao).*")
            self.int8 = DynamicInt8Linear.from_float(source)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        logits = self.int8(hidden)
        top = logits.topk(min(self.candidates, logits.shape[-1]), dim=-1, sorted=False).indices
        exact = torch.einsum("...d,...kd->...k", hidden, self.weight[top].float())
        return logits.scatter_(-1, top, exact)


def optimize_for_cpu(model: Any, mode: str = "auto") -> tuple[Any, str]:
    """Apply `mode` to a float32 model on CPU, in place; return the model and the mode applied.

    Call it after LoRA adapters are merged (unmerged adapters work but keep their own float32 matmuls). The
    result is for inference only: it cannot be trained or saved with save_pretrained.
    """
    if mode not in CPU_MODES:
        raise ValueError(f"Unknown CPU mode {mode!r}; choose one of {', '.join(CPU_MODES)}.")
    first = next(model.parameters())
    if first.device.type != "cpu":
        if mode == "auto":
            return model, str(first.dtype).removeprefix("torch.")
        raise ValueError(f"CPU mode {mode!r} needs a model on the CPU, not {first.device}.")
    if any(isinstance(module, HalfLinear | RescoredInt8Head) for module in model.modules()):
        raise ValueError("This model was already optimized for CPU.")
    if mode == "auto":
        mode = _pick_auto(model)
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
    return model, mode


def _pick_auto(model: Any) -> str:
    # f16 only pays where the CPU has a fast f16 matrix-vector kernel (AVX-512 era x86 here); probe it.
    return "f16-int8head" if _f16_is_faster(model) else "f32-int8head"


def _f16_is_faster(model: Any, repeats: int = 3) -> bool:
    """Time the model's own MLP weights (more than a CPU cache holds) as f32 and f16 matrix-vector products."""
    weights = [m.weight for name, m in model.named_modules() if isinstance(m, nn.Linear) and "mlp" in name][:48]
    if not weights:
        return False
    halves = [w.detach().to(torch.float16) for w in weights]

    def best(ws: list[torch.Tensor], dtype: torch.dtype) -> float:
        rows = {w.shape[1]: torch.ones(1, w.shape[1], dtype=dtype) for w in ws}
        times = []
        with torch.inference_mode():
            for _ in range(repeats):
                start = time.perf_counter()
                for w in ws:
                    F.linear(rows[w.shape[1]], w)
                times.append(time.perf_counter() - start)
        return min(times)

    f32, f16 = best(weights, torch.float32), best(halves, torch.float16)
    log.info("f32 vs f16 matrix-vector probe: %.1f ms vs %.1f ms", f32 * 1e3, f16 * 1e3)
    return f16 < 0.8 * f32


def _quantize_head(model: Any) -> None:
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    tied = embedding is not None and head.weight is embedding.weight
    # Quantized from the float32 weight, before any f16 conversion, so int8 is as close to f32 as it gets.
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
