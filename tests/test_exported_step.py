"""medcot.model.exported_step: the exported step compiled by AOTInductor decodes as the eager step, on the CPU."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

import pytest
import torch

from medcot.model.exported_step import AotStep, StepModule, disagreement, export_step
from medcot.model.static_decode import StaticDecoder
from medcot.static_generation import StaticGenerator
from tests.test_static_decode import PROMPT, TOTAL, six_layers


# An AOTInductor build takes ~20 s on 2 shared cores.
@pytest.mark.slow
def test_the_compiled_package_decodes_the_eager_steps_tokens_and_caches_at_any_length(tmp_path: Path) -> None:
    decoder = StaticDecoder(six_layers())
    package = torch._inductor.aoti_compile_and_package(export_step(decoder), package_path=str(tmp_path / "step.pt2"))
    compiled = torch._inductor.aoti_load_package(package)
    assert disagreement(decoder, compiled) is None
    generator = StaticGenerator(decoder)
    ids = torch.randint(0, 300, (1, PROMPT), generator=torch.Generator().manual_seed(4))
    for new_tokens in (TOTAL, TOTAL + 40):  # two full-attention lengths, neither the example's
        arguments = {"input_ids": ids, "max_new_tokens": new_tokens, "eos_token_id": None}
        generator.step = decoder.step
        with torch.inference_mode():
            eager = generator.generate(**arguments)
            generator.step = AotStep(decoder, {False: compiled}, "loaded")
            assert torch.equal(generator.generate(**arguments), eager)
            assert generator.step.ready  # it never fell back to eager
    # The cache tensors are written in place by the compiled code, as by the eager step.
    with torch.inference_mode():
        caches = [decoder.new_cache(TOTAL) for _ in range(2)]
        for cache in caches:
            decoder.prefill(ids[0], cache)
        token, position = torch.tensor([3]), torch.tensor([PROMPT])
        decoder.step(token, position, caches[0])
        AotStep(decoder, {False: compiled}, "loaded")(token, position, caches[1], False)
    for eager_part, compiled_part in zip(
        caches[0].keys + caches[0].values, caches[1].keys + caches[1].values, strict=True
    ):
        assert torch.allclose(eager_part, compiled_part, atol=1e-5)
    assert torch.equal(caches[0].ring_positions, caches[1].ring_positions)


def test_a_compiled_step_that_decodes_other_tokens_is_named() -> None:
    decoder = StaticDecoder(six_layers())

    def wrong(token: torch.Tensor, position: torch.Tensor, *cache: object) -> torch.Tensor:
        return torch.zeros(1, decoder.model.config.hidden_size)

    assert disagreement(decoder, StepModule(decoder)) is None  # the eager layers agree with themselves
    assert "the compiled step decodes" in str(disagreement(decoder, wrong))


def test_the_steps_calls_share_one_context_across_threads() -> None:
    """spaces keeps the package it loaded in a ContextVar: every generation thread must see the one loaded first."""
    loads = []
    loaded: contextvars.ContextVar[bool] = contextvars.ContextVar("loaded", default=False)
    decoder = StaticDecoder(six_layers())

    def layers(token: torch.Tensor, position: torch.Tensor, keys: list, values: list, ring: torch.Tensor):
        if not loaded.get():
            loads.append(threading.current_thread().name)
            loaded.set(True)
        return decoder.step_hidden(token, position, keys, values, ring)

    step = AotStep(decoder, {False: layers}, "loaded")
    cache = decoder.new_cache(PROMPT + 2)

    def one_step(position: int) -> None:
        with torch.inference_mode():
            step(torch.tensor([1]), torch.tensor([position]), cache, False)

    for position in (0, 1):
        thread = threading.Thread(target=one_step, args=(position,))
        thread.start()
        thread.join()
    assert len(loads) == 1 and step.ready
