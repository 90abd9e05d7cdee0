"""medcot.model.compiled_step: the compiled step gives the eager step's logits, is cached, and fails into eager."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch._dynamo.utils import counters

from medcot.model import compiled_step
from medcot.model.compiled_step import CompiledStep, build_in_background, cache_key
from medcot.model.cpu_speed import optimize_for_cpu
from medcot.model.static_decode import StaticDecoder
from medcot.static_generation import StaticGenerator, static_generator
from tests.helpers.polling import wait_until
from tests.test_static_decode import PROMPT, TOTAL, six_layers


# Compiling takes minutes on 2 shared cores.
@pytest.mark.slow
def test_compiled_logits_equal_the_models_at_any_length_and_a_rebuild_loads(tmp_path: Path) -> None:
    model = six_layers()
    step = CompiledStep(StaticDecoder(model), tmp_path)
    assert step.build() and step.status.startswith("compiled")
    assert step.folder.is_dir() and any(step.folder.rglob("*")) and cache_key(step.decoder) in str(step.folder)
    ids = torch.randint(0, 300, (TOTAL,), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(ids[None]).logits[0, PROMPT - 1 :]
        for length in (TOTAL, TOTAL + 50):  # lengths it was not warmed up with: no recompile
            cache = step.decoder.new_cache(length)
            logits = [step.decoder.prefill(ids[:PROMPT], cache)]
            with torch.compiler.set_stance("fail_on_recompile"):
                for position in range(PROMPT, TOTAL):
                    hidden = step.compiled(
                        ids[position : position + 1].clone(),  # an inference tensor, as generations pass
                        torch.tensor([position]),
                        cache.keys,
                        cache.values,
                        cache.ring_positions,
                        False,
                    )
                    logits.append(step.decoder.head(hidden))
            assert torch.allclose(torch.cat(logits), expected, atol=1e-4)
    # A new process finds the kernels in the folder: here, dynamo's memory dropped, inductor's disk cache is hit.
    torch._dynamo.reset()
    counters.clear()
    again = CompiledStep(StaticDecoder(model), tmp_path)
    assert again.build()
    assert counters["inductor"]["fxgraph_cache_hit"] >= 1 and counters["inductor"]["fxgraph_cache_miss"] == 0


@pytest.mark.slow
def test_generation_through_the_compiled_step_equals_eager(tmp_path: Path) -> None:
    model = six_layers()
    generator = StaticGenerator(StaticDecoder(model))
    ids = torch.randint(0, 300, (1, PROMPT), generator=torch.Generator().manual_seed(4))
    arguments = {"input_ids": ids, "max_new_tokens": TOTAL, "eos_token_id": None}
    with torch.inference_mode():
        eager = generator.generate(**arguments)
    build_in_background(generator, tmp_path).join()
    assert generator.mode == "compiled" and isinstance(generator.step, CompiledStep)
    with torch.inference_mode():
        assert torch.equal(generator.generate(**arguments), eager)


def test_a_failed_compilation_leaves_eager_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(compiled_step.torch, "compile", broken)
    generator = StaticGenerator(StaticDecoder(six_layers()))
    with caplog.at_level(logging.INFO, logger="medcot.model.compiled_step"):
        build_in_background(generator, tmp_path).join()
    assert generator.mode == "static" and generator.step == generator.decoder.step
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "no C++ compiler here" in warnings[0].getMessage()
    assert "eager" in generator.compiled.status


def test_a_compiled_step_that_fails_at_run_time_turns_eager(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("kernel crashed")

    decoder = StaticDecoder(six_layers())
    step = CompiledStep(decoder, tmp_path)
    step.ready[False] = broken
    ids = torch.randint(0, 300, (PROMPT + 1,), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        cache = decoder.new_cache(PROMPT + 1)
        decoder.prefill(ids[:PROMPT], cache)
        with caplog.at_level(logging.WARNING, logger="medcot.model.compiled_step"):
            logits = step(ids[PROMPT:], torch.tensor([PROMPT]), cache, False)
    assert logits.shape == (1, 300) and not step.ready
    assert len(caplog.records) == 1 and "kernel crashed" in caplog.records[0].getMessage()


@pytest.mark.slow
def test_q8_rows_compile_in_the_background_by_default_and_decode_near_the_f16_weights(tmp_path: Path) -> None:
    """Mode q8-int4head (auto with AVX-512): decode "auto" compiles the step, which then reads the int8 blocks; until
    then the eager step reads the float16 weights."""
    model, _ = optimize_for_cpu(six_layers(), "f16")
    generator = static_generator(model, "cpu", None, "auto", cache_dir=tmp_path, rows="q8")
    assert generator is not None and isinstance(generator.compiled, CompiledStep)
    assert wait_until(lambda: generator.mode == "compiled", timeout=300), generator.compiled.status
    decoder = generator.decoder
    ids = torch.randint(0, 300, (TOTAL,), generator=torch.Generator().manual_seed(6))

    def steps(step: Callable[..., torch.Tensor]) -> torch.Tensor:
        cache = decoder.new_cache(TOTAL)
        decoder.prefill(ids[:PROMPT], cache)
        return torch.cat(
            [step(ids[at : at + 1].clone(), torch.tensor([at]), cache, False) for at in range(PROMPT, TOTAL)]
        )

    with torch.inference_mode():
        eager, compiled = steps(decoder.step), steps(generator.step)
    assert not torch.equal(eager, compiled), "the compiled step reads the blocks, not the f16 weights"
    torch.testing.assert_close(compiled, eager, atol=0.25, rtol=0)  # int8 blocks of random weights: ~0.1 apart
