"""medcot.generation: streaming, stop ids, cancellation and errors from the generation thread."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from transformers import LogitsProcessor, LogitsProcessorList

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.errors import GenerationError
from medcot.generation import (
    CancelCriteria,
    Chunk,
    StopTextCriteria,
    StopTextFilter,
    sampling_kwargs,
    stop_token_ids,
    stream_generate,
)
from medcot.prompt import STOP_TEXTS, encode_prompt
from tests.helpers.tiny import ADAPTER_OUTPUT

QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)
ENDLESS = GenerationParams(temperature=0, max_new_tokens=5000)  # only ever stopped by cancellation


def generation_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "medcot-generate"]


def wait_for_no_generation_thread(within: float = 1.0) -> list[threading.Thread]:
    deadline = time.monotonic() + within
    while generation_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    return generation_threads()


@pytest.fixture(autouse=True)
def _no_thread_left_before() -> None:
    assert wait_for_no_generation_thread(5.0) == []


@pytest.fixture
def prompt_ids(engine: Engine) -> list[int]:
    return encode_prompt(engine.loaded.tokenizer, QUESTION).input_ids


def test_stop_ids_are_eos_and_end_of_turn(engine: Engine) -> None:
    tokenizer = engine.loaded.tokenizer
    ids = stop_token_ids(tokenizer, engine.loaded.model)
    assert ids == sorted({tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")})


def test_stop_ids_without_a_generation_config(engine: Engine) -> None:
    tokenizer = engine.loaded.tokenizer
    assert stop_token_ids(tokenizer, object()) == sorted(
        {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")}
    )


def test_sampling_kwargs() -> None:
    assert sampling_kwargs(GenerationParams(temperature=0, max_new_tokens=7)) == {
        "max_new_tokens": 7,
        "do_sample": False,
    }
    sampled = sampling_kwargs(GenerationParams(temperature=0.7, top_p=0.9, top_k=20, repetition_penalty=1.1))
    (sampler,) = sampled.pop("logits_processor")  # top-k sampling: tests/test_sampling.py
    assert (sampler.top_k, [type(w).__name__ for w in sampler.warpers]) == (
        20,
        ["TemperatureLogitsWarper", "TopPLogitsWarper"],
    )
    assert sampled == {"max_new_tokens": 512, "do_sample": False, "repetition_penalty": 1.1}


def test_cancel_criteria() -> None:
    first, second = threading.Event(), threading.Event()
    criteria = CancelCriteria(first, second)
    ids = torch.zeros((2, 3), dtype=torch.long)
    assert criteria(ids, torch.zeros(2, 5)).tolist() == [False, False]
    second.set()
    assert criteria(ids, torch.zeros(2, 5)).tolist() == [True, True]


def test_stream_matches_plain_greedy_generate(engine: Engine, prompt_ids: list[int]) -> None:
    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    chunks = list(stream_generate(model, tokenizer, prompt_ids, GREEDY, stop_texts=STOP_TEXTS))
    assert "".join(c.text for c in chunks) == ADAPTER_OUTPUT
    counts = [c.tokens for c in chunks]
    assert counts == sorted(counts) and counts[0] >= 1
    with torch.inference_mode():
        ids = torch.tensor([prompt_ids])
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=64,
            eos_token_id=stop_token_ids(tokenizer, model),
        )
    new = out[0, len(prompt_ids) :].tolist()
    assert tokenizer.decode(new, skip_special_tokens=True) == ADAPTER_OUTPUT
    assert counts[-1] == len(new)  # the closing <end_of_turn> counts as a generated token
    assert wait_for_no_generation_thread() == []


def test_closing_the_iterator_ends_the_thread(engine: Engine, prompt_ids: list[int]) -> None:
    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    stream = stream_generate(
        model, tokenizer, prompt_ids, ENDLESS, suppress_tokens=stop_token_ids(tokenizer, model), stop_texts=STOP_TEXTS
    )
    chunks = [next(stream) for _ in range(3)]
    assert generation_threads(), "generation should still be running"
    stream.close()
    assert wait_for_no_generation_thread(1.0) == []
    assert chunks[-1].tokens < ENDLESS.max_new_tokens


def test_cancel_event_ends_the_stream_and_the_thread(engine: Engine, prompt_ids: list[int]) -> None:
    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    cancel = threading.Event()
    stream = stream_generate(
        model,
        tokenizer,
        prompt_ids,
        ENDLESS,
        cancel,
        suppress_tokens=stop_token_ids(tokenizer, model),
        stop_texts=STOP_TEXTS,
    )
    last = None
    for index, chunk in enumerate(stream):
        last = chunk
        if index == 2:
            cancel.set()
    assert last is not None and last.tokens < ENDLESS.max_new_tokens
    assert wait_for_no_generation_thread(1.0) == []
    assert cancel.is_set()  # the caller's event is only read


def test_error_in_generate_surfaces_with_its_cause(engine: Engine, prompt_ids: list[int]) -> None:
    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    with pytest.raises(GenerationError) as caught:
        list(stream_generate(model, tokenizer, prompt_ids, GREEDY, no_such_generate_argument=1, stop_texts=STOP_TEXTS))
    assert isinstance(caught.value.__cause__, ValueError)
    assert "no_such_generate_argument" in str(caught.value)
    assert wait_for_no_generation_thread(1.0) == []


class ScriptedModel:
    """A model whose generate() streams given token ids and then, optionally, raises."""

    device = torch.device("cpu")
    generation_config = None

    def __init__(self, token_ids: list[int], error: BaseException | None = None, end: bool = True) -> None:
        self.token_ids = token_ids
        self.error = error
        self.end = end

    def generate(self, input_ids: torch.Tensor, streamer: Any, **kwargs: Any) -> torch.Tensor:
        streamer.put(input_ids.cpu())
        for token_id in self.token_ids:
            streamer.put(torch.tensor([token_id]))
        if self.error is not None:
            raise self.error
        if self.end:
            streamer.end()
        return input_ids


def test_error_after_some_chunks_keeps_the_chunks_then_raises(engine: Engine) -> None:
    tokenizer = engine.loaded.tokenizer
    boom = RuntimeError("boom in generate")
    model = ScriptedModel(tokenizer("Rest and fluids ", add_special_tokens=False)["input_ids"], error=boom)
    seen: list[Chunk] = []
    with pytest.raises(GenerationError, match="boom in generate") as caught:
        seen.extend(stream_generate(model, tokenizer, [1, 2, 3], GREEDY, stop_texts=STOP_TEXTS))
    assert caught.value.__cause__ is boom
    assert "".join(c.text for c in seen) == "Rest and fluids "
    assert wait_for_no_generation_thread(1.0) == []


def test_trailing_tokens_that_print_nothing_are_counted(engine: Engine) -> None:
    tokenizer = engine.loaded.tokenizer
    text_ids = tokenizer("Rest and fluids.\n", add_special_tokens=False)["input_ids"]
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    model = ScriptedModel([*text_ids, end_of_turn])
    chunks = list(stream_generate(model, tokenizer, [1, 2, 3], GREEDY, stop_texts=STOP_TEXTS))
    assert "".join(c.text for c in chunks) == "Rest and fluids.\n"
    assert chunks[-1].tokens == len(text_ids) + 1


# -------------------------------------------------------------------------- the base's invented next question

MARKER = "### Question:"
ANSWER = "Rest and fluids.\n\n"
RUN_ON = f"{ANSWER}{MARKER}\n\nFever and neck stiffness?\n\n### Response:\nRest."  # what the pretrained base does


def test_the_stop_text_is_the_cards_question_header() -> None:
    assert STOP_TEXTS == (MARKER,)


def shown_text(pieces: list[str], texts: tuple[str, ...] = STOP_TEXTS) -> tuple[str, list[str]]:
    shown = StopTextFilter(texts)
    out = [shown.feed(piece) for piece in pieces] + [shown.close()]
    return "".join(out), out


def visible(text: str) -> str:
    return text[: text.find(MARKER)] if MARKER in text else text


@pytest.mark.parametrize(
    "pieces",
    [
        [RUN_ON],
        ["Rest and fluids.\n\n###", " Question:\n\nFever?"],
        ["Rest and fluids.\n\n#", "#", "#", " ", "Question", ":", "\n\nFever?"],
        ["Rest and fluids.\n\n### Question", ":"],
        list(RUN_ON),
    ],
)
def test_filter_cuts_at_the_marker_however_it_is_split(pieces: list[str]) -> None:
    text, out = shown_text(pieces)
    assert text == ANSWER
    assert not any("#" in piece for piece in out)  # not even a partial marker is ever shown


@pytest.mark.parametrize(
    "text",
    [
        "### Diagnosis\nHeart failure.\n\n### Treatment\nLoop diuretic.",
        "<think>\n### Step 1\nFluid overload.\n</think>\n### Answer\nStart a loop diuretic.",
        "Frequently asked: ### Questions about diuretics",
        "Ends on a partial marker ### Quest",
        "## Question: two hashes are another heading",
    ],
)
def test_filter_keeps_other_headings_and_partial_markers(text: str) -> None:
    assert shown_text(list(text))[0] == text
    assert shown_text([text])[0] == text


def test_filter_holds_only_a_possible_marker() -> None:
    shown = StopTextFilter(STOP_TEXTS)
    assert shown.feed("Heart failure.\n\n##") == "Heart failure.\n\n"  # held: may become the marker
    assert shown.feed("# Diagnosis") == "### Diagnosis"  # released as soon as it cannot
    assert shown.feed(" ### Question") == " "
    assert shown.feed(":") == ""
    assert shown.stopped and shown.feed("more") == "" and shown.close() == ""


@given(
    st.lists(st.sampled_from(["Rest", " and", " fluids", ".", "\n", "#", "##", " ", "Question", ":", "Q", "<think>"])),
    st.data(),
)
def test_filter_shows_exactly_the_text_before_the_marker(tokens: list[str], data: st.DataObject) -> None:
    text = "".join(tokens)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    shown, out = shown_text(pieces)
    assert shown == visible(text)
    assert all(visible(text).startswith("".join(out[: i + 1])) for i in range(len(out)))  # nothing taken back


def test_criteria_checks_only_the_generated_tail(engine: Engine) -> None:
    tokenizer = engine.loaded.tokenizer
    prompt = tokenizer(f"{MARKER}\n\nA question?\n\n### Response:", add_special_tokens=False)["input_ids"]
    answer = tokenizer("Rest and fluids. " * 30, add_special_tokens=False)["input_ids"]
    marker = tokenizer(f"\n\n{MARKER}", add_special_tokens=False)["input_ids"]
    criteria = StopTextCriteria(tokenizer, len(prompt), STOP_TEXTS)
    decoded: list[list[int]] = []
    decode = tokenizer.batch_decode

    def spy(sequences: list[list[int]], **kwargs: Any) -> list[str]:
        decoded.extend(sequences)
        return decode(sequences, **kwargs)

    tokenizer.batch_decode = spy  # an instance attribute, removed below
    try:
        assert criteria(torch.tensor([prompt]), None).tolist() == [False]  # the prompt's own marker is not read
        assert criteria(torch.tensor([prompt + answer]), None).tolist() == [False]
        assert criteria(torch.tensor([prompt + answer + marker]), None).tolist() == [True]
        batch = torch.tensor([prompt + answer + marker, prompt + answer + answer[: len(marker)]])
        assert criteria(batch, None).tolist() == [True, False]
    finally:
        del tokenizer.batch_decode
    assert max(len(ids) for ids in decoded) <= len(MARKER) + 1  # a short tail per token, never the whole output


class ForceTokens(LogitsProcessor):
    """Makes a real model generate exactly ``ids`` (then the last one forever), as a run-on base would."""

    def __init__(self, ids: list[int], prompt_length: int) -> None:
        self.ids = ids
        self.prompt_length = prompt_length

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        step = min(input_ids.shape[1] - self.prompt_length, len(self.ids) - 1)
        forced = torch.full_like(scores, float("-inf"))
        forced[:, self.ids[step]] = 0.0
        return forced


def test_generation_stops_at_the_marker_and_never_shows_it(engine: Engine, prompt_ids: list[int]) -> None:
    model, tokenizer = engine.loaded.model, engine.loaded.tokenizer
    script = tokenizer(RUN_ON, add_special_tokens=False)["input_ids"]
    through_marker = len(tokenizer(ANSWER + MARKER, add_special_tokens=False)["input_ids"])
    assert tokenizer.decode(script[:through_marker]) == ANSWER + MARKER  # the marker ends on a token boundary
    force = LogitsProcessorList([ForceTokens(script, len(prompt_ids))])

    chunks = list(stream_generate(model, tokenizer, prompt_ids, GREEDY, logits_processor=force, stop_texts=STOP_TEXTS))

    assert "".join(c.text for c in chunks) == ANSWER
    assert not any("#" in c.text for c in chunks)
    assert chunks[-1].tokens == through_marker  # stopped at the marker's last token, not at max_new_tokens
    assert wait_for_no_generation_thread() == []

    # Without stop texts the same model runs on into the invented exchange: the criteria are what stop it.
    everything = stream_generate(model, tokenizer, prompt_ids, GREEDY, stop_texts=(), logits_processor=force)
    assert "".join(c.text for c in everything).startswith(RUN_ON)


def test_marker_is_cut_from_a_stream_that_does_not_stop(engine: Engine) -> None:
    # ScriptedModel ignores stopping criteria: the consumer side alone must keep the marker out.
    tokenizer = engine.loaded.tokenizer
    model = ScriptedModel(tokenizer(RUN_ON, add_special_tokens=False)["input_ids"])
    chunks = list(stream_generate(model, tokenizer, [1, 2, 3], GREEDY, stop_texts=STOP_TEXTS))
    assert "".join(c.text for c in chunks) == ANSWER
    assert chunks[-1].tokens == len(tokenizer(RUN_ON, add_special_tokens=False)["input_ids"])


def test_held_text_is_released_at_the_end(engine: Engine) -> None:
    tokenizer = engine.loaded.tokenizer
    text = "<think>\n### Step 1\n</think>\nRest and fluids. ###"
    model = ScriptedModel(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert "".join(c.text for c in stream_generate(model, tokenizer, [1, 2, 3], GREEDY, stop_texts=STOP_TEXTS)) == text
