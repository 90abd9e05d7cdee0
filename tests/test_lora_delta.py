"""medcot.model.lora_delta: the base model's outputs from merged LoRA weights, and the adapters it declines."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from medcot.model.lora_delta import LoraDelta
from tests.helpers.tiny import TinyRepos, build_model, build_tokenizer

IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46]])


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=IDS).logits


@pytest.fixture(scope="module")
def models(tiny_repos: TinyRepos) -> tuple[torch.nn.Module, torch.nn.Module, LoraDelta]:
    base = AutoModelForCausalLM.from_pretrained(tiny_repos.base, dtype=torch.float32).eval()
    peft_model = PeftModel.from_pretrained(copy.deepcopy(base), tiny_repos.adapter).eval()
    delta = LoraDelta.from_peft(peft_model)
    assert delta is not None
    return base, peft_model.merge_and_unload(), delta


def test_attached_the_merged_model_computes_the_base_model(
    models: tuple[torch.nn.Module, torch.nn.Module, LoraDelta],
) -> None:
    base, merged, delta = models
    tuned = logits(merged)
    assert not torch.allclose(tuned, logits(base), atol=1e-3)  # the adapter does change the outputs
    delta.attach(merged)
    delta.attach(merged)  # attaching twice subtracts once
    try:
        assert delta.attached
        torch.testing.assert_close(logits(merged), logits(base), atol=1e-4, rtol=1e-4)
    finally:
        delta.detach()
    assert not delta.attached
    torch.testing.assert_close(logits(merged), tuned)


def test_factors_are_the_low_rank_pairs(models: tuple[torch.nn.Module, torch.nn.Module, LoraDelta]) -> None:
    _, merged, delta = models
    assert len(delta.factors) == 2 * 7  # every projection of the 2 tiny layers
    for name, factors in delta.factors.items():
        layer = merged.get_submodule(name)
        assert factors.a.shape == (16, layer.in_features) and factors.b.shape == (layer.out_features, 16)
        assert factors.scaling == 1.0  # lora_alpha 16 / r 16
    assert delta.nbytes == sum(f.a.nbytes + f.b.nbytes for f in delta.factors.values()) > 0


@pytest.mark.parametrize(
    "config",
    [
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], use_dora=True),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_bias=True),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["lm_head"]),
        LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"]),
    ],
    ids=["dora", "lora bias", "modules to save", "embedding lora"],
)
def test_adapters_whose_merge_cannot_be_undone_are_declined(config: LoraConfig) -> None:
    model = get_peft_model(build_model(build_tokenizer()), config)
    assert LoraDelta.from_peft(model) is None


def test_plain_lora_on_some_layers_is_kept() -> None:
    model = get_peft_model(build_model(build_tokenizer()), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    delta = LoraDelta.from_peft(model)
    assert delta is not None and len(delta.factors) == 2 * 2
    assert all(name.endswith(("q_proj", "v_proj")) for name in delta.factors)
