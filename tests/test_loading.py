"""medcot.model.loading: adapter vs merged weights, devices and dtypes, and readable load errors."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

import medcot.model.embedded
from medcot.config import DEFAULT_ADAPTER, GenerationParams, Settings
from medcot.engine import Engine
from medcot.errors import ModelLoadError
from medcot.model.loading import (
    LoadedModel,
    load_model,
    pick_device,
    pick_dtype,
)
from medcot.prompt import encode_prompt
from medcot.request import Query
from tests.helpers.readable import load_error
from tests.helpers.tiny import TinyRepos, build_tokenizer

QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)


def logits(loaded: LoadedModel, question: str = QUESTION) -> torch.Tensor:
    ids = torch.tensor([encode_prompt(loaded.tokenizer, question).input_ids])
    with torch.inference_mode():
        return loaded.model(input_ids=ids).logits[0].float()


# ----------------------------------------------------------------------------------------- adapter vs merged


def test_adapter_folder_loads_as_base_plus_adapter(
    engine: Engine, unmerged_engine: Engine, tiny_repos: TinyRepos
) -> None:
    merged = engine.loaded
    assert (merged.kind, merged.merged) == ("adapter", True)
    assert not isinstance(merged.model, PeftModel)  # folded into the base weights
    assert merged.base_id == str(tiny_repos.base) and merged.adapter_id == str(tiny_repos.adapter)
    assert merged.dtype == "float32" and merged.device == "cpu"
    assert "(merged)" in merged.describe()

    unmerged = unmerged_engine.loaded
    assert (unmerged.kind, unmerged.merged) == ("adapter", False)
    assert isinstance(unmerged.model, PeftModel)
    assert "(merged)" not in unmerged.describe()


def test_merged_folder_loads_alone_without_the_base(tiny_settings: Settings, tiny_repos: TinyRepos) -> None:
    settings = replace(tiny_settings, base_model=str(tiny_repos.base / "never-read"), adapter=str(tiny_repos.merged))
    loaded = load_model(settings)
    assert (loaded.kind, loaded.merged) == ("merged", True)
    assert loaded.adapter_id == str(tiny_repos.merged)
    assert "merged weights" in loaded.describe()
    assert not isinstance(loaded.model, PeftModel)


def test_no_adapter_loads_the_base(tiny_settings: Settings) -> None:
    loaded = load_model(replace(tiny_settings, adapter=None))
    assert (loaded.kind, loaded.adapter_id, loaded.merged) == ("base", None, False)
    assert "without the medical adapter" in loaded.describe()


def test_the_adapter_really_changes_the_output(unmerged_engine: Engine) -> None:
    with_adapter = unmerged_engine.ask(Query(QUESTION, params=GREEDY))
    without = unmerged_engine.ask(Query(QUESTION, params=GREEDY, use_adapter=False))
    assert with_adapter.answer == "Start a loop diuretic." and with_adapter.reasoning
    assert without.answer == "Rest and fluids." and without.reasoning == ""
    on = logits(unmerged_engine.loaded)
    with unmerged_engine.loaded.model.disable_adapter():
        off = logits(unmerged_engine.loaded)
    assert (on - off).abs().max() > 1.0


def test_merged_and_unmerged_logits_agree(engine: Engine, unmerged_engine: Engine, tiny_settings: Settings) -> None:
    from_disk = load_model(replace(tiny_settings, adapter=str(Path(tiny_settings.adapter).parent / "merged")))
    unmerged = logits(unmerged_engine.loaded)
    torch.testing.assert_close(logits(engine.loaded), unmerged, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits(from_disk), unmerged, atol=1e-4, rtol=1e-4)


@pytest.fixture
def embedded_is_tiny_base(tiny_repos: TinyRepos, monkeypatch: pytest.MonkeyPatch) -> list[Path | None]:
    """MEDCOT_BASE_MODEL=embedded resolves to the tiny base (the conversion itself is tested in test_embedded)."""
    calls: list[Path | None] = []

    def converted(cache_dir: Path | None = None, progress: object = None) -> Path:
        calls.append(cache_dir)
        return tiny_repos.base

    monkeypatch.setattr(medcot.model.embedded, "embedded_model_dir", converted)
    return calls


def test_embedded_base_with_a_named_adapter_applies_it(
    tiny_settings: Settings, tiny_repos: TinyRepos, embedded_is_tiny_base: list[Path | None]
) -> None:
    # What `python -m training --base embedded` makes: MEDCOT_BASE_MODEL=embedded MEDCOT_ADAPTER=<its folder>.
    settings = replace(tiny_settings, base_model="embedded", cache_dir=Path("/nowhere"))
    engine = Engine(settings).load()
    loaded = engine.loaded
    assert embedded_is_tiny_base == [Path("/nowhere")]
    assert (loaded.kind, loaded.merged, loaded.embedded, loaded.adapter_id) == (
        "adapter",
        True,
        True,
        settings.adapter,
    )
    assert loaded.base_delta is not None  # the comparison can subtract it again
    assert engine.compare_unavailable() is None
    assert engine.ask(Query(QUESTION, params=GREEDY)).answer == "Start a loop diuretic."
    assert engine.ask(Query(QUESTION, params=GREEDY, use_adapter=False)).answer == "Rest and fluids."


def test_embedded_base_with_the_cards_adapter_still_runs_alone(
    tiny_settings: Settings, embedded_is_tiny_base: list[Path | None]
) -> None:
    # The card's adapter was trained on google/gemma-3-270m-it, not on the embedded pretrained base.
    loaded = load_model(replace(tiny_settings, base_model="embedded", adapter=DEFAULT_ADAPTER))
    assert (loaded.kind, loaded.adapter_id, loaded.embedded) == ("base", None, True)


# ---------------------------------------------------------------------------------------------------- devices


def test_pick_device_and_dtype() -> None:
    assert pick_device(Settings(device="cpu")) == "cpu"
    assert pick_dtype(Settings(dtype="float32"), "cpu") is torch.float32
    assert pick_dtype(Settings(dtype="bfloat16"), "cpu") is torch.bfloat16
    assert pick_dtype(Settings(dtype="auto"), "cpu") is torch.float32
    assert pick_dtype(Settings(dtype="auto"), "cuda") is torch.bfloat16


# ----------------------------------------------------------------------------------------------------- errors


def test_missing_local_adapter_folder(tiny_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-adapter"
    error = load_error(replace(tiny_settings, adapter=str(missing)))
    assert str(missing) in str(error) and "does not exist" in str(error) and "adapter" in str(error)


def test_missing_local_base_folder(tiny_settings: Settings, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-base"
    error = load_error(replace(tiny_settings, base_model=str(missing)))
    assert str(missing) in str(error) and "does not exist" in str(error) and "base model" in str(error)


def test_corrupt_adapter_weights(tiny_settings: Settings, tiny_repos: TinyRepos, tmp_path: Path) -> None:
    adapter = tmp_path / "corrupt-adapter"
    shutil.copytree(tiny_repos.adapter, adapter)
    (adapter / "adapter_model.safetensors").write_bytes(b"\x00not a safetensors file" * 20)
    error = load_error(replace(tiny_settings, adapter=str(adapter)))
    assert "corrupt" in str(error) and str(adapter) in str(error)


def test_corrupt_adapter_config(tiny_settings: Settings, tiny_repos: TinyRepos, tmp_path: Path) -> None:
    adapter = tmp_path / "bad-config"
    shutil.copytree(tiny_repos.adapter, adapter)
    (adapter / "adapter_config.json").write_text("{not json", encoding="utf-8")
    assert "corrupt" in str(load_error(replace(tiny_settings, adapter=str(adapter))))


def test_corrupt_merged_weights(tiny_settings: Settings, tiny_repos: TinyRepos, tmp_path: Path) -> None:
    merged = tmp_path / "corrupt-merged"
    shutil.copytree(tiny_repos.merged, merged)
    (merged / "model.safetensors").write_bytes(b"")
    assert "corrupt" in str(load_error(replace(tiny_settings, adapter=str(merged))))


def test_adapter_for_another_base_does_not_fit(tiny_settings: Settings, tmp_path: Path) -> None:
    tokenizer = build_tokenizer()
    other = Gemma3ForCausalLM(
        Gemma3TextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,  # the tiny base has 64
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        )
    )
    get_peft_model(other, LoraConfig(r=4, target_modules="all-linear")).save_pretrained(tmp_path / "other-lora")
    error = load_error(replace(tiny_settings, adapter=str(tmp_path / "other-lora")))
    assert "does not fit the base" in str(error)
    assert "MEDCOT_BASE_MODEL" in str(error)


def test_engine_keeps_a_load_failure_as_a_message(tiny_settings: Settings, tmp_path: Path) -> None:
    failed = Engine(replace(tiny_settings, adapter=str(tmp_path / "missing"))).load()
    assert not failed.ready and failed.error and "does not exist" in failed.error
    assert failed.status() == failed.error
    with pytest.raises(ModelLoadError, match="does not exist"):
        failed.require_backend()
