"""A decoder matrix kept twice for the static step: a packed copy for one-row products (decoding), and the model's
own float16 weight for prompts. CPU modes (cpu_speed.py): q8-int4head (auto with AVX-512), bf16- and int8-int4head.

Why: a decode step's time is the bytes it reads and how well a kernel streams them. Through the app on 2 Xeon cores
(docs/benchmark.md): float16 rows 30.5 tok/s, bfloat16 36.2, int8 42.8 (not float32's greedy tokens: opt-in), q8
blocks in the compiled step 62.4 (float32's greedy tokens over the 32 that the slow test checks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class PackedRows:
    """``weight`` (out x in) beside a packed copy that a subclass makes and reads in ``one_row``."""

    dtype: torch.dtype  # the copy's, which compiled_step's cache key reads

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def one_row(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T`` for float32 ``x``, float32 out: one row through the packed copy, a prompt through the
        weight upcast (as cpu_speed.HalfLinear)."""
        return self.one_row(x) if x.shape[0] == 1 else F.linear(x, self.weight.to(x.dtype))


class Int8Rows(PackedRows):
    """int8 with one bfloat16 scale per output row."""

    dtype = torch.int8

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight)
        rows = weight.detach().float()
        scale = (rows.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        self.values = (rows / scale[:, None]).round().to(torch.int8)
        self.scales = scale.to(torch.bfloat16)

    def one_row(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.values, self.scales).float()


class Bf16Rows(PackedRows):
    """bfloat16 packed for oneDNN (its blocked layout). The row is split into high and low bfloat16 rows that go
    through one call (the weight read once): rounding the row to bfloat16 alone moved greedy tokens."""

    dtype = torch.bfloat16

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight)
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16), 2)

    def one_row(self, x: torch.Tensor) -> torch.Tensor:
        high = x.to(torch.bfloat16)
        rows = torch.cat([high, (x - high.float()).to(torch.bfloat16)])
        both = torch.ops.mkldnn._linear_pointwise(rows, self.packed, None, "none", [], "")
        return both.float().sum(0, keepdim=True)


# Rows of a Q8 product summed in separate parts: Inductor fuses the parts into one loop, whose independent sums keep
# more loads in flight (decoder layers 10.6 -> 6.6 ms a token; 2 parts 8.3, 8 parts 6.7, 16 parts 7.6).
_PARTS = 4


class Q8Rows(PackedRows):
    """int8 in blocks of 32 columns, a float32 scale each (llama.cpp's Q8_0 layout), read only by the compiled step,
    whose Inductor loops read them well where no torch kernel does (decoder layers 6.6 ms a token, against 15.8 for
    float16 weights compiled the same way); the eager step, serving while it builds, reads the float16 weight.
    A scale per 32 weights rounds less than Int8Rows' scale per row, whose rounding moved greedy tokens."""

    dtype = torch.int8
    block = 32

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__(weight)
        count, width = weight.shape
        if width % self.block:
            raise ValueError(f"blocks of {self.block} need a width that is a multiple of it, not {width}")
        blocks = weight.detach().float().reshape(count, width // self.block, self.block)
        scale = (blocks.abs().amax(-1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        self.values = (blocks / scale).round().to(torch.int8)
        self.scales = scale

    def one_row(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.compiler.is_compiling():
            return F.linear(x.to(self.weight.dtype), self.weight).float()
        # as_strided makes Inductor write the row out first: inlined, its norm (a square root) was recomputed for
        # every weight: the decoder layers took 16.0 ms a token that way, 9.0 with the row written out.
        x = x.as_strided(x.shape, x.stride()).reshape(-1, self.block)
        parts = _PARTS if self.values.shape[0] % _PARTS == 0 else 1
        size = self.values.shape[0] // parts
        products = [
            (self.values[i : i + size].float() * x * self.scales[i : i + size]).sum((-1, -2))
            for i in range(0, self.values.shape[0], size)
        ]
        return torch.cat(products)[None]


ROWS: dict[str, type[PackedRows]] = {"int8": Int8Rows, "bf16": Bf16Rows, "q8": Q8Rows}
# Rows that only a compiled step reads fast: their mode compiles the step in the background by default.
COMPILED_ROWS = frozenset({"q8"})


def rows_of(cpu_mode: str | None) -> str | None:
    """The packed rows a CPU mode decodes through ("q8", "int8", "bf16"), or None: the weights themselves."""
    kind = (cpu_mode or "").split("-")[0]
    return kind if kind in ROWS else None
