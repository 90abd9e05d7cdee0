"""medcot.model.step_rows: packed decoder rows for the static step's one-row products."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medcot.model.step_rows import Bf16Rows, Int8Rows, rows_of


# bf16: the weight and the two products rounded to bfloat16 (8 bits); int8: the weight to 255 levels a row.
@pytest.mark.parametrize(("kind", "tolerance"), [(Bf16Rows, 5e-3), (Int8Rows, 2e-2)])
def test_one_row_products_are_close_and_prompts_are_the_weights_own(kind: type, tolerance: float) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = (torch.randn(256, 128, generator=generator) * 0.05).half()
    rows = kind(weight)
    x = torch.randn(1, 128, generator=generator)
    exact = F.linear(x, weight.float())
    got = rows.product(x)
    assert got.dtype == torch.float32 and got.shape == (1, 256)
    assert not torch.equal(got, exact), "one row goes through the packed copy"
    assert (got - exact).abs().max() <= tolerance * exact.abs().max()
    prompt = torch.randn(5, 128, generator=generator)
    assert torch.equal(rows.product(prompt), F.linear(prompt, weight.float())), "a prompt uses the weight itself"


def test_bf16_rows_do_not_round_the_activation() -> None:
    """High and low parts: the product is nearer than with the row rounded to bfloat16 once (what moved tokens)."""
    generator = torch.Generator().manual_seed(1)
    weight = (torch.randn(512, 256, generator=generator) * 0.05).bfloat16().half()  # exactly representable in bf16
    x = torch.randn(1, 256, generator=generator)
    exact = F.linear(x.double(), weight.double()).float()
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.bfloat16(), 1)
    rounded_once = torch.ops.mkldnn._linear_pointwise(x.bfloat16(), packed, None, "none", [], "").float()
    split_error = (Bf16Rows(weight).product(x) - exact).abs().mean()
    assert split_error < (rounded_once - exact).abs().mean() * 0.8


def test_modes_name_their_rows() -> None:
    assert rows_of("int8-int4head") == "int8" and rows_of("bf16-int4head") == "bf16"
    assert rows_of("f16-int4head") is None and rows_of("float32") is None and rows_of(None) is None
