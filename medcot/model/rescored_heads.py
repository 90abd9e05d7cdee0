"""The 262144 x 640 output projection screened in int8 or int4, its best candidates then recomputed exactly.

Why: a decode step's time on CPU is the bytes it reads, ~60% of them this projection's. The quantized screen keeps
the unquantized greedy pick unless the best token falls outside the rescored top, and sampling sees exact logits
where the probability mass is. Per token on 2 Xeon cores: float16 ~31 ms, int8 7.8 ms, int4 ~4.4 ms.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from medcot.model.long_rows import top_k

# Logits recomputed exactly: the f32-best token was at most 6th among int8 logits; int4's 128 best held it and the
# card's top-64 sampling set on the quality prompts (benchmarks/bench_cpu.py).
INT8_CANDIDATES = 64
INT4_CANDIDATES = 128
# Rows of the int8 weight packed per block: packing copies its input (262144 rows: 8 blocks of 21 MB).
_BLOCK = 32768
# Rows converted to float32 at a time while quantizing, so no full-size float32 copy (670 MB) is ever made.
_CHUNK = 8192
# int4 values per scale; 64 was the fastest of 32/64/128 for this projection on 2 cores.
_GROUP = 64


class RescoredHead(nn.Module):
    """An output projection screened by ``screen`` (a quantized copy), its ``candidates`` best logits recomputed
    from ``weight``, shared with the input embedding (nothing copied)."""

    def __init__(self, weight: nn.Parameter, candidates: int) -> None:
        super().__init__()
        self.weight = weight
        self.candidates = candidates

    def screen(self, hidden: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        logits = self.screen(hidden)
        top = top_k(logits, min(self.candidates, logits.shape[-1]), sorted=False)[1]
        exact = torch.einsum("...d,...kd->...k", hidden, self.weight[top].float())
        return logits.scatter_(-1, top, exact)


class RescoredInt8Head(RescoredHead):
    """Screened with torch's dynamic int8 kernels (activations quantized per call, reduced range as torch.ao does)."""

    def __init__(self, weight: nn.Parameter, candidates: int = INT8_CANDIDATES) -> None:
        super().__init__(weight, candidates)
        # torch's int8 kernels called as torch.ao's dynamic Linear calls them (it packs a full-size placeholder first);
        # torch.ao warns it will move to torchao, but these kernels are torch's own.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*(deprecated|torchao).*")
            self.packed = [
                torch.ops.quantized.linear_prepack(_int8_rows(weight[start : start + _BLOCK].detach()), None)
                for start in range(0, weight.shape[0], _BLOCK)
            ]

    def screen(self, hidden: torch.Tensor) -> torch.Tensor:
        blocks = [torch.ops.quantized.linear_dynamic(hidden, packed, reduce_range=True) for packed in self.packed]
        return torch.cat(blocks, dim=-1)


class RescoredInt4Head(RescoredHead):
    """Screened with torch's int4 weight-only kernel: asymmetric int4 in groups of 64 columns, bfloat16 activations
    (its float32 path is several times slower); refuses widths not a multiple of 64."""

    def __init__(self, weight: nn.Parameter, candidates: int = INT4_CANDIDATES) -> None:
        super().__init__(weight, candidates)
        if weight.shape[1] % _GROUP:
            raise ValueError(f"int4 groups of {_GROUP} need a width that is a multiple of it, not {weight.shape[1]}")
        self.rows, width = weight.shape
        padded = -(-self.rows // 16) * 16  # the kernel packs rows 16 at a time: zero rows fill the last pack
        self.packed = torch.empty(padded, width // 2, dtype=torch.uint8)
        self.scales_zeros = torch.empty(width // _GROUP, padded, 2, dtype=torch.bfloat16)
        for start in range(0, padded, _CHUNK):
            chunk = weight[start : start + _CHUNK].detach().float()
            if len(chunk) % 16:
                chunk = torch.nn.functional.pad(chunk, (0, 0, 0, 16 - len(chunk) % 16))
            rows = slice(start, start + len(chunk))
            self.packed[rows], self.scales_zeros[:, rows] = _int4_rows(chunk)

    def screen(self, hidden: torch.Tensor) -> torch.Tensor:
        rows = hidden.reshape(-1, hidden.shape[-1]).to(torch.bfloat16)
        logits = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, _GROUP, self.scales_zeros)
        return logits[:, : self.rows].float().reshape(*hidden.shape[:-1], -1)


def _int8_rows(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric int8 with a scale per row (vocabulary rows differ a lot in norm), as torch's per-channel weight
    observer computes it, a chunk of rows at a time."""
    values = torch.empty(weight.shape, dtype=torch.int8)
    scales = torch.empty(weight.shape[0], dtype=torch.float64)
    for start in range(0, weight.shape[0], _CHUNK):
        rows = weight[start : start + _CHUNK].float()
        scale = (rows.abs().amax(dim=1).double() / 127.5).clamp_min(torch.finfo(torch.float32).eps)
        zeros = torch.zeros(len(rows), dtype=torch.int64)
        values[start : start + len(rows)] = torch.quantize_per_channel(rows, scale, zeros, 0, torch.qint8).int_repr()
        scales[start : start + len(rows)] = scale
    return torch._make_per_channel_quantized_tensor(values, scales, torch.zeros_like(scales, dtype=torch.int64), 0)


def _int4_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``rows`` in the layout ``_weight_int4pack_mm_for_cpu`` reads: packed uint8 (rows x width/2) and bfloat16
    scale and zero per group (groups x rows x 2), a weight being (q - 8) * scale + zero."""
    count, width = rows.shape
    groups = rows.reshape(count, width // _GROUP, _GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp_min(torch.finfo(torch.float32).tiny)
    values = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(count, width)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values, 1)
    scales_zeros = torch.cat([scale, low + 8 * scale], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    return packed, scales_zeros
