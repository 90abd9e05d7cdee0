"""medcot.model.static_decode: the hand-written step gives transformers' logits, in every CPU mode, base included."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import Gemma3ForCausalLM

from medcot.model.cpu_speed import optimize_for_cpu
from medcot.model.lora_delta import LoraDelta
from medcot.model.static_decode import StaticDecoder, unsupported
from medcot.model.step_rows import Bf16Rows, Int8Rows
from tests.helpers.tiny import tiny_config

PROMPT = 7
TOTAL = 24


def six_layers(window: int = 5) -> Gemma3ForCausalLM:
    """Five sliding layers and a full one (Gemma 3's pattern), a window shorter than the sequence."""
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(tiny_config(300, layers=6, sliding_window=window)).eval()
    torch.nn.init.normal_(model.model.embed_tokens.weight, std=0.2)
    return model


def stepwise(decoder: StaticDecoder, ids: torch.Tensor, base: bool = False) -> torch.Tensor:
    """Logits after each position from PROMPT - 1 on: the prompt prefilled, then one step a token."""
    cache = decoder.new_cache(len(ids))
    logits = [decoder.prefill(ids[:PROMPT], cache, base)]
    for position in range(PROMPT, len(ids)):
        logits.append(decoder.step(ids[position : position + 1], torch.tensor([position]), cache, base))
    return torch.cat(logits)


@pytest.mark.parametrize("window", [5, 512])  # the ring wraps many times / never fills
def test_step_logits_equal_the_models(window: int) -> None:
    model = six_layers(window)
    ids = torch.randint(0, 300, (TOTAL,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(ids[None]).logits[0, PROMPT - 1 :]
        got = stepwise(StaticDecoder(model), ids)
        assert torch.allclose(got, expected, atol=1e-4), (got - expected).abs().max()
        # The fused matrices are the layers' weights: transformers' forward is unchanged by them.
        assert torch.equal(model(ids[None]).logits[0, PROMPT - 1 :], expected)


@pytest.mark.parametrize("mode", ["f16-int8head", "f16-int4head"])
def test_f16_weights_and_a_rescored_head_give_generates_tokens(mode: str) -> None:
    model, _ = optimize_for_cpu(six_layers(), mode)
    ids = torch.randint(0, 300, (PROMPT,), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model.generate(ids[None], max_new_tokens=TOTAL - PROMPT, do_sample=False, eos_token_id=None)
        decoder = StaticDecoder(model)
        cache = decoder.new_cache(TOTAL)
        tokens, logits = [], decoder.prefill(ids, cache)
        for position in range(PROMPT, TOTAL):
            tokens.append(int(logits.argmax()))
            logits = decoder.step(torch.tensor(tokens[-1:]), torch.tensor([position]), cache)
    assert tokens == expected[0, PROMPT:].tolist()


def test_the_base_from_merged_weights_subtracts_the_delta() -> None:
    base = six_layers()
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft_model = get_peft_model(copy.deepcopy(base), config)
    delta = LoraDelta.from_peft(peft_model)
    merged = peft_model.merge_and_unload().eval()
    ids = torch.randint(0, 300, (TOTAL,), generator=torch.Generator().manual_seed(3))
    decoder = StaticDecoder(merged, delta)
    with torch.inference_mode():
        assert torch.allclose(stepwise(decoder, ids, base=True), base(ids[None]).logits[0, PROMPT - 1 :], atol=1e-4)
        assert torch.allclose(stepwise(decoder, ids), merged(ids[None]).logits[0, PROMPT - 1 :], atol=1e-4)
        assert not decoder.base_wanted()
        delta.attach(merged)
        assert decoder.base_wanted()


def test_models_it_does_not_implement_are_named() -> None:
    assert "softcapping" in unsupported(Gemma3ForCausalLM(tiny_config(300, attn_logit_softcapping=50.0)))
    peft_model = get_peft_model(six_layers(), LoraConfig(r=2, target_modules=["q_proj"]))
    assert "not a plain Gemma3ForCausalLM" in unsupported(peft_model)
    with pytest.raises(ValueError, match="not a plain"):
        StaticDecoder(peft_model)


@pytest.mark.parametrize(("rows", "kind"), [("int8", Int8Rows), ("bf16", Bf16Rows)])
def test_packed_rows_decode_one_row_and_leave_prompts_to_the_weights(rows: str, kind: type) -> None:
    """The opt-in modes int8-/bf16-int4head: one-row products read the packed copies; a prompt's, the f16 weights
    (an unquantized head here, so that only the rows differ)."""
    model, _ = optimize_for_cpu(six_layers(), "f16")
    ids = torch.randint(0, 300, (TOTAL,), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        exact, packed = StaticDecoder(model), StaticDecoder(model, rows=rows)
        assert isinstance(packed.layers[0].qkv, kind) and packed.layers[0].qkv.weight.dtype == torch.float16
        prompt_logits = [decoder.prefill(ids[:PROMPT], decoder.new_cache(TOTAL)) for decoder in (exact, packed)]
        step_logits = stepwise(exact, ids), stepwise(packed, ids)
    assert torch.equal(*prompt_logits), "a prompt goes through the f16 weights, as without packed rows"
    assert not torch.equal(*step_logits), "decoding reads the packed copies"
    tolerance = {"int8": 0.5, "bf16": 0.05}[rows]  # bf16 rows split high/low: near f16's products
    torch.testing.assert_close(*step_logits, atol=tolerance, rtol=0)
