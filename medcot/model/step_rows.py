"""A decoder matrix kept twice for the static step: a packed copy for one-row products (decoding), and the model's
own float16 weight for prompts. CPU modes (cpu_speed.py) bf16-int4head (auto where the CPU has bfloat16) and
int8-int4head (opt-in).

Why: a decode step reads every weight once, and on 2 cores the read, and how well a kernel streams it, sets the
time. Through the app's streaming path on 2 quiet Xeon VM cores (one interleaved run, card's sampling,
docs/bench/user_speed.json): float16 30.5 tok/s, these bfloat16 rows 36.2 (1.19x, +200 MB), int8 rows 42.8 (+100 MB).

Quality, benchmarks/bench_cpu.py's 6 quality prompts, greedy, 64 tokens, against float32:
* bfloat16 rows: equal on all 6. Rounding the activations and the outputs to bfloat16 moved prompt 1's tokens from
  its 15th on; bfloat16 weights with float32 arithmetic did not. So a row is split into two bfloat16 rows (high and
  low parts summing to it within float32's precision) that go through one oneDNN call: the weight is read once, and
  the two products' sum is the product up to their own bfloat16 rounding.
* int8 rows (a scale per row, torch's ``_weight_int8pack_mm``, fast only with bfloat16 activations): tokens left
  float32's at 17, 18, 35 and 51 on 4 prompts. The weights' rounding does it (gate/up alone diverged on 3 prompts,
  down on 2, Q/K/V on none), so this mode is faster but not float32's answers.
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


ROWS: dict[str, type[PackedRows]] = {"int8": Int8Rows, "bf16": Bf16Rows}


def rows_of(cpu_mode: str | None) -> str | None:
    """The packed rows a CPU mode decodes through ("int8", "bf16"), or None: the weights themselves."""
    kind = (cpu_mode or "").split("-")[0]
    return kind if kind in ROWS else None
