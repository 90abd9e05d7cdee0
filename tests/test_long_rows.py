"""medcot.model.long_rows: argmax and top-k over a vocabulary's logits, split over the cores, answer as torch does."""

from __future__ import annotations

import pytest
import torch

from medcot.model.long_rows import argmax, top_k

WIDTH = 262144  # Gemma 3's vocabulary


def test_argmax_is_torchs_first_largest_even_across_parts() -> None:
    scores = torch.randn(3, WIDTH, generator=torch.Generator().manual_seed(0))
    scores[0, 5] = scores[0, WIDTH - 3] = 100.0  # a tie in the first and last parts: the first index wins
    scores[1, :] = -float("inf")
    scores[1, 200000] = 0.0  # a sampler's output: one finite score
    assert torch.equal(argmax(scores), scores.argmax(-1))
    assert argmax(scores)[0] == 5 and argmax(scores)[1] == 200000
    assert torch.equal(argmax(scores[None]), scores[None].argmax(-1)), "leading dimensions are kept"
    short = torch.randn(2, 300)
    assert torch.equal(argmax(short), short.argmax(-1))


@pytest.mark.parametrize("k", [1, 64, 128])
def test_top_k_gives_torchs_values_and_ids(k: int) -> None:
    scores = torch.randn(2, WIDTH, generator=torch.Generator().manual_seed(k))
    values, ids = top_k(scores, k)
    expected = scores.topk(k, dim=-1)
    assert torch.equal(values, expected.values) and torch.equal(ids, expected.indices), "sorted, best first"
    unsorted_values, unsorted_ids = top_k(scores, k, sorted=False)
    assert torch.equal(scores.gather(-1, unsorted_ids), unsorted_values)
    assert torch.equal(unsorted_ids.sort(-1).values, expected.indices.sort(-1).values)
    values, ids = top_k(scores[:, None], k)
    assert ids.shape == (2, 1, k) and torch.equal(ids[:, 0], expected.indices)
    short = torch.randn(1, 1000)
    assert torch.equal(top_k(short, 5)[1], short.topk(5).indices)
