"""medcot.model.rescored_heads: quantized screening, exact logits where greedy decoding and sampling look."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medcot.model.rescored_heads import RescoredHead, RescoredInt4Head, RescoredInt8Head


@pytest.mark.parametrize("kind", [RescoredInt8Head, RescoredInt4Head])
def test_rescored_head_is_exact_where_it_matters(kind: type[RescoredHead]) -> None:
    generator = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.randn(5000, 64, generator=generator) * 0.05, requires_grad=False)
    hidden = torch.randn(3, 40, 64, generator=generator) * 4
    exact = hidden @ weight.T
    head = kind(weight, candidates=16)
    with torch.inference_mode():
        got = head(hidden)
        top = head.screen(hidden).topk(16, dim=-1).indices  # the candidates the head rescored
    assert torch.equal(got.argmax(-1), exact.argmax(-1))
    torch.testing.assert_close(got.gather(-1, top), exact.gather(-1, top), atol=1e-5, rtol=1e-5)
    assert (got - exact).abs().max() > 1e-4, "the tail should come from the quantized screening"


def test_int4_screening_is_the_dequantized_weights_product_over_many_chunks() -> None:
    """Rows are packed a chunk at a time: every chunk's rows must land where they belong."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(20000, 128, generator=generator) * 0.05  # more rows than one quantization chunk
    head = RescoredInt4Head(nn.Parameter(weight, requires_grad=False))
    hidden = torch.randn(2, 128, generator=generator)
    groups = weight.reshape(20000, 2, 64)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = (high - low) / 15
    dequantized = (((groups - low) / scale).round() * scale + low).reshape(20000, 128)
    with torch.inference_mode():
        got = head.screen(hidden)
    reference = hidden.bfloat16().float() @ dequantized.T
    # bfloat16 activations and scales: ~3 significant digits
    torch.testing.assert_close(got, reference, atol=0.05 * reference.abs().max().item(), rtol=0)
    assert torch.corrcoef(torch.stack([got.flatten(), reference.flatten()]))[0, 1] > 0.999


def test_int4_refuses_a_width_its_groups_do_not_divide() -> None:
    with pytest.raises(ValueError, match="multiple of"):
        RescoredInt4Head(nn.Parameter(torch.randn(10, 48), requires_grad=False))
