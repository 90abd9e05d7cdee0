"""A decoder matrix kept twice for the static step: int8 with a scale per row for one-row products (decoding), and
the model's own float16 weight for prompts. Opt-in (CPU mode int8-int4head): faster, not equal to float32's tokens.

Why: a decode step reads every weight once, and on 2 cores the read sets the time. The 72 decoder products of a
token, distinct weights of the 270M's shapes on 2 Xeon VM cores: float16 17.8 ms, int8 weight-only 7.5 ms (torch's
``_weight_int8pack_mm``; fast only with bfloat16 activations, ~10x slower with float32 ones).

The measured cost (benchmarks/bench_cpu.py's 6 quality prompts, greedy, 64 tokens, against float32): tokens left
float32's at 17, 18, 35 and 51 on 4 prompts, the other 2 equal. The weights' rounding does it: bfloat16 activations
with float32 weights kept all 6 equal. Per matrix, int8 gate/up alone diverged on 3 prompts, down on 2, Q/K/V on none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Int8Rows:
    """``weight`` (out x in) as int8 with one bfloat16 scale per output row, beside the weight itself."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        rows = weight.detach().float()
        scale = (rows.abs().amax(dim=1) / 127).clamp_min(torch.finfo(torch.float32).tiny)
        self.values = (rows / scale[:, None]).round().to(torch.int8)
        self.scales = scale.to(torch.bfloat16)
        self.dtype = torch.int8  # what compiled_step's cache key reads

    def product(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T`` for float32 ``x``, float32 out: one row through the int8 copy, more (a prompt) through the
        weight upcast, as the model's own float16 layers do (cpu_speed.HalfLinear)."""
        if x.shape[0] > 1:
            return F.linear(x, self.weight.to(x.dtype))
        return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.values, self.scales).float()


class Bf16Rows:
    """``weight`` as bfloat16 packed for oneDNN, for one-row products, beside the weight itself (for prompts).

    bfloat16 activations or outputs rounded once moved greedy tokens off float32's; bfloat16 weights with float32
    arithmetic did not. So the row is split into two bfloat16 rows, high and low parts, that sum to it within
    float32's precision, and both go through one call (the weight is read once): their products' sum is the product.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach().to(torch.bfloat16), 2)
        self.dtype = torch.bfloat16  # what compiled_step's cache key reads

    def product(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            return F.linear(x, self.weight.to(x.dtype))
        high = x.to(torch.bfloat16)
        both = torch.ops.mkldnn._linear_pointwise(
            torch.cat([high, (x - high.float()).to(torch.bfloat16)]), self.packed, None, "none", [], ""
        )
        return both.float().sum(0, keepdim=True)
