"""medcot.model.step_rows: packed decoder rows for the static step's one-row products."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medcot.model.step_rows import COMPILED_ROWS, Bf16Rows, Int8Rows, Q8Rows, rows_of


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


def test_q8_blocks_are_read_by_the_compiled_step_and_the_eager_step_reads_the_weight() -> None:
    generator = torch.Generator().manual_seed(2)
    weight = (torch.randn(96, 128, generator=generator) * 0.05).half()
    rows = Q8Rows(weight)
    assert rows.values.shape == (96, 4, 32) and rows.values.dtype == torch.int8 and rows.scales.shape == (96, 4, 1)
    x = torch.randn(1, 128, generator=generator)
    assert torch.equal(rows.product(x), F.linear(x.half(), weight).float()), "eager: the float16 weight"
    compiled = torch.compile(rows.product, fullgraph=True, dynamic=False)(x)
    dequantized = (rows.values.double() * rows.scales.double()).reshape(96, 128)
    torch.testing.assert_close(compiled, F.linear(x.double(), dequantized).float(), atol=1e-5, rtol=1e-5)
    # Each block within half a step of its largest / 127 of the weight.
    blocks = weight.float().reshape(96, 4, 32)
    step = blocks.abs().amax(-1, keepdim=True) / 127
    assert ((dequantized.float().reshape(96, 4, 32) - blocks).abs() <= step / 2 + 1e-7).all()


def test_q8_blocks_keep_a_ggufs_q8_0_blocks_exactly_and_refuse_other_widths() -> None:
    """A Q8_0 block is a float16 scale times int8 values whose largest is +-127: it comes back as it was."""
    generator = torch.Generator().manual_seed(3)
    values = torch.randint(-127, 128, (8, 2, 32), generator=generator)
    values[:, :, 0] = 127
    scales = torch.rand(8, 2, 1, generator=generator).half().float() * 1e-3
    weight = (values * scales).reshape(8, 64)
    rows = Q8Rows(weight)
    assert torch.equal((rows.values.float() * rows.scales).reshape(8, 64), weight)
    with pytest.raises(ValueError, match="multiple of it"):
        Q8Rows(torch.zeros(4, 48))


def test_modes_name_their_rows() -> None:
    assert rows_of("int8-int4head") == "int8" and rows_of("bf16-int4head") == "bf16"
    assert rows_of("q8-int4head") == "q8" and "q8" in COMPILED_ROWS
    assert rows_of("f16-int4head") is None and rows_of("float32") is None and rows_of(None) is None
