"""half_loading.load_half: a checkpoint read straight into the f16 modes' layout, on a tiny random Gemma 3."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from medcot.model import half_loading
from medcot.model.cpu_speed import optimize_for_cpu
from medcot.model.half_loading import load_half
from medcot.model.rescored_heads import RescoredInt8Head
from tests.test_cpu_speed import logits, tiny_model


@pytest.fixture
def f32_folder(tmp_path: Path) -> Path:
    model = tiny_model(seed=4)
    with torch.no_grad():  # norms away from their init of zeros, so the test sees them read exactly
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0, 0.5)
    model.generation_config.max_new_tokens = 7  # proves generation_config.json is read
    model.save_pretrained(tmp_path)
    return tmp_path


def test_load_half_reads_the_f16_layout_directly(f32_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(half_loading, "_CHUNK_BYTES", 1000)  # many chunks per tensor, and rows larger than a chunk
    reference = AutoModelForCausalLM.from_pretrained(f32_folder, dtype=torch.float32).eval()
    model = load_half(f32_folder)
    assert model is not None and model.generation_config.max_new_tokens == 7
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    expected = dict(reference.named_parameters())
    for name, parameter in model.named_parameters():
        matmul = "proj" in name or "embed_tokens" in name
        assert parameter.dtype == (torch.float16 if matmul else torch.float32), name
        assert torch.equal(parameter, expected[name].to(parameter.dtype)), name

    ids = torch.tensor([[2, 10, 11, 40, 41, 42]])
    for mode in ("f16", "f16-int8head"):
        via_f32, _ = optimize_for_cpu(AutoModelForCausalLM.from_pretrained(f32_folder, dtype=torch.float32), mode)
        via_half, _ = optimize_for_cpu(load_half(f32_folder), mode)
        got, want = logits(via_half, ids), logits(via_f32.eval(), ids)
        if mode == "f16":
            assert torch.equal(got, want)
        assert torch.equal(got.argmax(-1), want.argmax(-1))


def test_load_half_leaves_other_layouts_to_transformers(f32_folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(f32_folder / "model.safetensors")
    renamed = {name.replace("model.", "language_model.", 1): tensor for name, tensor in weights.items()}
    save_file(renamed, f32_folder / "model.safetensors", metadata={"format": "pt"})
    assert load_half(f32_folder) is None, "names that do not match"
    save_file({k: v for k, v in weights.items() if "layers.1." not in k}, f32_folder / "model.safetensors")
    assert load_half(f32_folder) is None, "a missing tensor would leave uninitialized memory"
    (f32_folder / "model.safetensors").rename(f32_folder / "model-00001-of-00002.safetensors")
    assert load_half(f32_folder) is None, "sharded checkpoints"


def test_load_half_refuses_a_truncated_file(f32_folder: Path) -> None:
    file = f32_folder / "model.safetensors"
    file.write_bytes(file.read_bytes()[:-100])
    with pytest.raises(OSError, match="truncated"):
        load_half(f32_folder)


def test_loading_uses_the_half_loader_for_f16_modes(tiny_settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from medcot.model import loading

    calls = []
    monkeypatch.setattr(loading, "load_half", lambda folder: calls.append(folder) or load_half(folder))
    loaded = loading.load_model(replace(tiny_settings, dtype="auto", cpu_mode="f16-int8head"))
    assert loaded.dtype == "f16-int8head" and calls == [Path(tiny_settings.base_model)]
    assert isinstance(loaded.model.get_output_embeddings(), RescoredInt8Head)
    f32 = loading.load_model(tiny_settings)
    ids = torch.tensor([[2, 30, 31, 32]])
    assert torch.equal(logits(loaded.model, ids).argmax(-1), logits(f32.model, ids).argmax(-1))
    calls.clear()
    assert loading.load_model(replace(tiny_settings, dtype="auto", cpu_mode="f32-int8head")).dtype == "f32-int8head"
    assert calls == [], "f32 modes load with transformers"
