"""A decoder matrix kept twice for the static step: a packed copy for one-row products (decoding), and the model's
own float16 weight for prompts. CPU modes (cpu_speed.py): q8-int4head (auto with AVX-512; int8 blocks that only the
compiled step reads), bf16-int4head and int8-int4head (opt-in).

Why: a decode step reads every weight once, and on 2 cores the read, and how well a kernel streams it, sets the
time. Through the app's streaming path on 2 quiet Xeon VM cores (one interleaved run each, card's sampling,
docs/bench/user_speed.json): float16 rows 30.5 tok/s, bfloat16 rows 36.2 (+200 MB), int8 rows 42.8 (+100 MB); in a
later run q8 blocks in the compiled step 62.4 against 37.2 for bfloat16 rows (+112 MB).

Quality, benchmarks/bench_cpu.py's 6 quality prompts, greedy, 64 tokens, against float32:
* bfloat16 rows: equal on all 6. Rounding the activations and the outputs to bfloat16 moved prompt 1's tokens from
  its 15th on; bfloat16 weights with float32 arithmetic did not. So a row is split into two bfloat16 rows (high and
  low parts summing to it within float32's precision) that go through one oneDNN call: the weight is read once, and
  the two products' sum is the product up to their own bfloat16 rounding.
* int8 rows (a scale per row, torch's ``_weight_int8pack_mm``, fast only with bfloat16 activations): tokens left
  float32's at 17, 18, 35 and 51 on 4 prompts. The weights' rounding does it (gate/up alone diverged on 3 prompts,
  down on 2, Q/K/V on none), so this mode is faster but not float32's answers.
* q8 blocks (a scale per 32 weights), through the compiled step: equal on 4 prompts; prompts 3 and 6 leave
  float32's at their 39th and 35th token (all 6 equal over the 32 tokens the slow test checks).
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
        """``x @ weight.T`` for float32 ``x``, float32 out: one row through the packed copy, more (a prompt) through
        the weight upcast, as the model's own float16 layers do (cpu_speed.HalfLinear)."""
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
    """bfloat16 packed for oneDNN (its blocked layout), each row split high and low."""

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
    """int8 in blocks of 32 columns, a float32 scale each (llama.cpp's Q8_0 layout), read only by the compiled step:
    Inductor writes each product as fused loops (int8 to float32, times the row and the scale, summed). The eager
    step, which serves while the compiled one builds, reads the float16 weight.

    Why blocks: the step's bytes set its speed, and a block of 32 keeps every weight within 1/254 of its block's
    largest (a GGUF's Q8_0 blocks come back exactly), where torch's int8 kernels take one scale a row, whose rounding
    moved greedy tokens (Int8Rows). Why compiled: no torch kernel reads these blocks, and Inductor's loops do well
    (the compiled decoder layers, 2 Xeon VM cores, 22 GB/s of read bandwidth that day: 6.6 ms a token, against 15.8
    for float16 weights compiled the same way and 19.1 for the eager step's bfloat16 rows).
    """

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
        # as_strided makes Inductor write the row out first: inlined, its norm was recomputed for every weight,
        # a square root included (Inductor compiles with -fmath-errno, so the root is not hoisted out of the loop):
        # the decoder layers took 16.0 ms a token that way, 9.0 with the row written out.
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
