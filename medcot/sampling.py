"""Sampling at the card's defaults (top-k 64, top-p 0.95, temperature 1.0) for the cost of greedy decoding.

Why: generate()'s sampling sorts all 262,144 scores for top-p and draws over all of them, though top-k kept only 64;
on 2 cores that made the card's sampling a quarter to a third slower than greedy (issue 17).
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from medcot.model.long_rows import top_k


class TopKSampler(LogitsProcessor):
    """Draws the next token from the `top_k` best scores with transformers' temperature and top-p warpers applied
    to those alone; returns scores where only the drawn token is finite, for generate(do_sample=False) to pick
    (generate() has no hook to sample from a subset). Used as the last processor.

    The distribution equals generate(do_sample=True, temperature, top_k, top_p)'s (top-k picks the same tokens before
    or after a positive temperature), but where tokens tie with the k-th score TopKLogitsWarper keeps them all and
    this keeps k. Draws use torch's global generator, as generate() does.
    """

    def __init__(self, top_k: int, temperature: float = 1.0, top_p: float = 1.0) -> None:
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive whole number, got {top_k!r}")
        self.top_k = top_k
        warpers: list[LogitsProcessor] = []
        if temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(temperature))  # refuses temperatures <= 0 as generate() does
        if top_p < 1.0:
            warpers.append(TopPLogitsWarper(top_p))
        self.warpers = LogitsProcessorList(warpers)

    def distribution(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidate token ids (best first) and their sampling probabilities, each of shape (batch, k)."""
        values, ids = top_k(scores.float(), min(self.top_k, scores.shape[-1]))
        return ids, self.warpers(input_ids, values).softmax(dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        ids, probabilities = self.distribution(input_ids, scores)
        drawn = ids.gather(-1, torch.multinomial(probabilities, num_samples=1))
        # A new tensor, as transformers' processors return: generate() keeps `scores` as the step's raw logits.
        return torch.full_like(scores, -float("inf")).scatter_(-1, drawn, 0.0)
