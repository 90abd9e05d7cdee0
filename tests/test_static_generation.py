"""medcot.static_generation: the app's streams through the static step equal transformers' generate()."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from medcot.backends.local import LocalBackend
from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.generation import stream_generate
from medcot.prompt import STOP_TEXTS, encode_prompt
from medcot.static_generation import StaticGenerator, static_generator

QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=48)
CARD = GenerationParams(max_new_tokens=48)


def text(backend: LocalBackend, params: GenerationParams, use_adapter: bool = True, seed: int = 0) -> str:
    ids = encode_prompt(backend.loaded.tokenizer, QUESTION).input_ids
    torch.manual_seed(seed)
    return "".join(chunk.text for chunk in backend.stream(ids, params, threading.Event(), use_adapter, STOP_TEXTS))


@pytest.fixture(scope="module")
def backends(engine: Engine) -> tuple[LocalBackend, LocalBackend]:
    """The engine's model through the static step, and through generate()."""
    static = LocalBackend(engine.loaded, "static")
    plain = LocalBackend(engine.loaded, "generate")
    assert isinstance(static.static, StaticGenerator) and plain.static is None
    return static, plain


@pytest.mark.parametrize("params", [GREEDY, CARD, replace(GREEDY, repetition_penalty=1.3)], ids=str)
@pytest.mark.parametrize("use_adapter", [True, False], ids=["adapter", "base"])
def test_streams_equal_generates(
    backends: tuple[LocalBackend, LocalBackend], params: GenerationParams, use_adapter: bool
) -> None:
    static, plain = backends
    expected = text(plain, params, use_adapter)
    assert text(static, params, use_adapter) == expected
    assert expected  # the tiny models answer something: adapter and base differ below


def test_the_comparison_answers_as_the_base(backends: tuple[LocalBackend, LocalBackend]) -> None:
    static, _ = backends
    assert text(static, GREEDY, use_adapter=True) != text(static, GREEDY, use_adapter=False)


def test_stop_within_a_token_ends_the_stream(backends: tuple[LocalBackend, LocalBackend]) -> None:
    static, _ = backends
    ids = encode_prompt(static.loaded.tokenizer, QUESTION).input_ids
    cancel = threading.Event()
    chunks = static.stream(ids, replace(GREEDY, max_new_tokens=4000), cancel, True, STOP_TEXTS)
    first = next(chunks)
    cancel.set()
    rest = list(chunks)
    assert first.tokens + sum(1 for _ in rest) < 4000


def test_what_it_cannot_run_goes_to_generate(engine: Engine) -> None:
    generator = static_generator(engine.loaded.model, "cpu", engine.loaded.base_delta, "static")
    assert generator is not None
    ids = torch.tensor([[1, 2, 3]])
    assert generator.refusal({"input_ids": ids, "do_sample": True}) is not None
    assert generator.refusal({"input_ids": ids, "num_beams": 2}) == "arguments num_beams"
    assert generator.refusal({"input_ids": ids, "do_sample": False}) is None
    # top-k 0 samples with generate's own sampling: the stream still works, through generate()
    params = GenerationParams(top_k=0, max_new_tokens=8)
    tokenizer = engine.loaded.tokenizer
    prompt = encode_prompt(tokenizer, QUESTION).input_ids
    chunks = list(
        stream_generate(engine.loaded.model, tokenizer, prompt, params, stop_texts=STOP_TEXTS, static=generator)
    )
    assert chunks and chunks[-1].tokens <= 8


def test_no_static_step_off_the_cpu_or_when_asked(engine: Engine) -> None:
    model, delta = engine.loaded.model, engine.loaded.base_delta
    assert static_generator(model, "cpu", delta, "generate") is None
    assert static_generator(model, "cuda", delta, "auto") is None
    assert static_generator(model, "cpu", delta, "auto") is static_generator(model, "cpu", delta, "static")


def test_q8_rows_are_built_only_for_a_step_that_compiles() -> None:
    """q8 rows are read by the compiled step alone: a static (eager) step decodes from the float16 weights."""
    from medcot.model.cpu_speed import optimize_for_cpu
    from tests.test_static_decode import six_layers

    model, _ = optimize_for_cpu(six_layers(), "f16")
    generator = static_generator(model, "cpu", None, "static", rows="q8")
    assert generator is not None and generator.decoder.rows is None and generator.compiled is None
