"""medcot.sampling: TopKSampler draws from the distribution generate(do_sample=True) samples from."""

from __future__ import annotations

import pytest
import torch
from transformers import Gemma3ForCausalLM, LogitsProcessorList

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.generation import sampling_kwargs, stream_generate
from medcot.prompt import encode_prompt
from medcot.sampling import TopKSampler
from tests.helpers.tiny import tiny_config

VOCAB = 300
# (temperature, top_p, top_k): the card's defaults, and settings where top-p and top-k each do the cutting.
SETTINGS = [(1.0, 0.95, 64), (0.7, 0.9, 20), (1.5, 1.0, 5), (2.0, 0.5, 100)]


@pytest.fixture(scope="module")
def model() -> Gemma3ForCausalLM:
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(tiny_config(VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=2)).eval()
    with torch.no_grad():  # logits spread wide enough that top-p cuts inside the top-k
        model.get_output_embeddings().weight.mul_(8)
    return model


def reference_steps(model: Gemma3ForCausalLM, temperature: float, top_p: float, top_k: int) -> tuple:
    """Plain transformers sampling with a fixed seed: each step's raw logits and its processed scores."""
    torch.manual_seed(1)
    ids = torch.randint(3, VOCAB, (3, 8), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            output_logits=True,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=0,
            eos_token_id=None,
        )
    return out.sequences, out.logits, out.scores


@pytest.mark.parametrize(("temperature", "top_p", "top_k"), SETTINGS)
def test_distribution_equals_transformers_sampling(
    model: Gemma3ForCausalLM, temperature: float, top_p: float, top_k: int
) -> None:
    sequences, raw, processed = reference_steps(model, temperature, top_p, top_k)
    sampler = TopKSampler(top_k, temperature=temperature, top_p=top_p)
    kept = []
    for step, (logits, scores) in enumerate(zip(raw, processed, strict=True)):
        expected = scores.softmax(dim=-1)
        ids, probabilities = sampler.distribution(sequences[:, : 8 + step], logits)
        got = torch.zeros_like(expected).scatter_(-1, ids, probabilities)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        kept.append((expected > 0).sum(-1))
    kept = torch.stack(kept)
    if top_p < 1.0 and top_k <= 64:
        assert (kept < top_k).any(), "top-p should cut inside the top-k somewhere: the test would not see it"
    assert (kept > 1).all(), "every step should leave a real choice"


@pytest.mark.parametrize(("temperature", "top_p", "top_k"), SETTINGS[:2])
def test_sampled_token_frequencies_match_the_distribution(
    model: Gemma3ForCausalLM, temperature: float, top_p: float, top_k: int
) -> None:
    _, raw, processed = reference_steps(model, temperature, top_p, top_k)
    expected = processed[0][0].softmax(dim=-1)
    draws = 20000
    torch.manual_seed(3)
    scores = TopKSampler(top_k, temperature=temperature, top_p=top_p)(None, raw[0][:1].expand(draws, -1))
    assert torch.isfinite(scores).sum(-1).eq(1).all(), "one token drawn per row, for the greedy step to pick"
    frequencies = torch.bincount(scores.argmax(-1), minlength=VOCAB) / draws
    assert frequencies[expected == 0].sum() == 0, "a token that top-k or top-p removed was drawn"
    # 20,000 draws: a frequency's standard deviation is at most 0.0035; 0.015 is over 4 of them.
    assert (frequencies - expected).abs().max() < 0.015


def test_the_draw_is_repeatable_with_a_seed(model: Gemma3ForCausalLM) -> None:
    ids = torch.tensor([[2, 10, 11, 12]])

    def sampled(seed: int) -> list[int]:
        torch.manual_seed(seed)
        kwargs = sampling_kwargs(GenerationParams(max_new_tokens=16))
        with torch.inference_mode():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=0, eos_token_id=None, **kwargs)
        return out[0, ids.shape[1] :].tolist()

    assert sampled(5) == sampled(5)
    assert len({tuple(sampled(seed)) for seed in range(4)}) > 1, "different seeds should draw differently"


def test_card_defaults_sample_through_the_top_k_sampler() -> None:
    kwargs = sampling_kwargs(GenerationParams())
    assert kwargs["do_sample"] is False and "top_k" not in kwargs and "temperature" not in kwargs
    (sampler,) = kwargs["logits_processor"]
    assert isinstance(sampler, TopKSampler) and sampler.top_k == 64
    assert [type(w).__name__ for w in sampler.warpers] == ["TopPLogitsWarper"]  # temperature 1.0 changes nothing
    assert sampler.warpers[0].top_p == 0.95
    plain = sampling_kwargs(GenerationParams(top_k=0, temperature=0.7))
    assert plain == {"max_new_tokens": 512, "do_sample": True, "temperature": 0.7, "top_p": 0.95, "top_k": 0}
    with pytest.raises(ValueError, match="top_k"):
        TopKSampler(0)


def test_stream_samples_after_the_callers_processors(engine: Engine) -> None:
    """A processor passed to stream_generate runs before the sampler: here it allows one token per step only."""
    from tests.test_generation import ForceTokens

    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    prompt = encode_prompt(tokenizer, "Fever and neck stiffness in a child. Next step?").input_ids
    script = tokenizer("Rest and fluids.", add_special_tokens=False)["input_ids"]
    force = LogitsProcessorList([ForceTokens(script, len(prompt))])
    params = GenerationParams(max_new_tokens=len(script))
    chunks = list(stream_generate(model, tokenizer, prompt, params, stop_texts=(), logits_processor=force))
    assert "".join(chunk.text for chunk in chunks) == "Rest and fluids."
