"""medcot.answer_stream: chunks parsed into reasoning/answer events and their stats, a whole answer from them, and
budget forcing (a reasoning the model left open is closed by the app, the answer follows)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

from medcot.answer_stream import Answer, ClosingTag, answer_events, closing_open_reasoning
from medcot.chunks import Chunk
from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats
from medcot.prompt import EncodedPrompt, encode_prompt
from medcot.prompt_styles import CARD, PRIMER_TEXT
from medcot.request import Query, Request
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_OUTPUT, ADAPTER_REASONING, BASE_OUTPUT

QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)


def chunks(*texts: str, closing_at: int | None = None) -> Iterator[Chunk]:
    """Chunks of one token each, as a backend yields them; the one at ``closing_at`` as the app's closing tag."""
    for count, text in enumerate(texts, 1):
        yield (ClosingTag if count - 1 == closing_at else Chunk)(text, count)


def request(max_new_tokens: int = 8, opens_reasoning: bool = False) -> Request:
    prompt = EncodedPrompt(text="", input_ids=[2, 5, 7], turns_used=0, turns_dropped=1)
    return Request(
        prompt, GenerationParams(max_new_tokens=max_new_tokens), True, PRIMER_TEXT if opens_reasoning else CARD
    )


def test_chunks_become_events_and_stats_without_a_model() -> None:
    events = list(
        answer_events(chunks("<think>Fluid", " overload</think>", "Diuretic", "."), request(), threading.Event())
    )
    assert events[:2] == [ReasoningDelta("Fluid"), ReasoningDelta(" overload")]
    assert isinstance(events[2], ReasoningDone) and not events[2].cut_off
    stats = events[-1].stats
    assert (stats.prompt_tokens, stats.new_tokens, stats.reasoning_tokens, stats.answer_tokens) == (3, 4, 2, 2)
    assert stats.turns_dropped == 1 and not (stats.hit_token_limit or stats.stopped or stats.reasoning_closed_by_app)
    answer = Answer.from_events(events)
    assert (answer.reasoning, answer.answer, answer.stats) == ("Fluid overload", "Diuretic.", stats)


def test_a_prefilled_reasoning_closed_by_the_app_and_a_stop_are_in_the_stats() -> None:
    cancel = threading.Event()
    cancel.set()  # stopped: the stats say so while fewer tokens than the budget were made
    stream = chunks("Fluid", "\n</think>\n", "Rest.", closing_at=1)
    stats = list(answer_events(stream, request(opens_reasoning=True), cancel))[-1].stats
    assert stats.reasoning_closed_by_app and stats.stopped and (stats.reasoning_tokens, stats.answer_tokens) == (2, 1)


def test_the_chunks_are_closed_when_the_events_are() -> None:
    closed = threading.Event()

    def held() -> Iterator[Chunk]:
        try:
            yield from chunks("<think>a", "b")
        finally:
            closed.set()

    events = answer_events(held(), request(), threading.Event())
    next(events)
    events.close()
    assert closed.is_set()


def test_answer_and_reasoning_from_the_adapter(engine: Engine) -> None:
    answer = engine.ask(Query(QUESTION, params=GREEDY))
    assert answer.answer == ADAPTER_ANSWER
    assert answer.reasoning == ADAPTER_REASONING
    kinds = [type(e) for e in answer.events]
    assert kinds[-1] is Finished and kinds.count(Finished) == 1
    assert kinds.count(ReasoningDone) == 1
    done = kinds.index(ReasoningDone)
    assert set(kinds[:done]) == {ReasoningDelta}
    assert set(kinds[done + 1 : -1]) == {AnswerDelta}


def test_stats_add_up(engine: Engine) -> None:
    stats = engine.ask(Query(QUESTION, params=GREEDY)).stats
    assert isinstance(stats, Stats)
    tokenizer = engine.loaded.tokenizer
    assert stats.prompt_tokens == len(encode_prompt(tokenizer, QUESTION).input_ids)
    expected_new = len(tokenizer(ADAPTER_OUTPUT + "<end_of_turn>", add_special_tokens=False)["input_ids"])
    assert stats.new_tokens == expected_new
    assert stats.reasoning_tokens + stats.answer_tokens == stats.new_tokens
    assert 0 < stats.reasoning_tokens < stats.new_tokens
    assert stats.answer_tokens > 0
    assert not (stats.hit_token_limit or stats.reasoning_cut_off or stats.stopped)
    assert stats.turns_dropped == 0
    assert stats.time_to_first_token is not None and 0 <= stats.time_to_first_token <= stats.seconds
    assert stats.tokens_per_second >= 0


def test_token_limit_cutting_the_reasoning(engine: Engine) -> None:
    answer = engine.ask(Query(QUESTION, params=replace(GREEDY, max_new_tokens=10)))
    stats = answer.stats
    assert stats.new_tokens == 10
    assert stats.hit_token_limit and stats.reasoning_cut_off and not stats.stopped
    assert (stats.reasoning_tokens, stats.answer_tokens) == (10, 0)
    assert answer.answer == "" and answer.reasoning and ADAPTER_REASONING.startswith(answer.reasoning)
    dones = [e for e in answer.events if isinstance(e, ReasoningDone)]
    assert len(dones) == 1 and dones[0].cut_off


def test_the_closing_tag_and_the_answer_pass_follow_the_first_pass(base_alone: Engine) -> None:
    request = base_alone.prepare(Query(QUESTION, (), replace(base_alone.generation_defaults(), temperature=0.0)))
    chunks = list(closing_open_reasoning(base_alone.backend, request, threading.Event()))
    closing = [index for index, chunk in enumerate(chunks) if isinstance(chunk, ClosingTag)]
    assert len(closing) == 1 and chunks[closing[0]].text.strip() == "</think>"
    first_pass, answer_pass = chunks[: closing[0]], chunks[closing[0] + 1 :]
    assert "".join(c.text for c in first_pass).strip() == BASE_OUTPUT and answer_pass
    tokens = [c.tokens for c in chunks]
    assert tokens == sorted(tokens) and tokens[-1] <= request.params.max_new_tokens  # counts go on, within budget


def test_no_closing_pass_once_stopped(base_alone: Engine) -> None:
    request = base_alone.prepare(Query(QUESTION, (), replace(base_alone.generation_defaults(), temperature=0.0)))
    cancel = threading.Event()
    cancel.set()
    chunks = list(closing_open_reasoning(base_alone.backend, request, cancel))
    assert not any(isinstance(chunk, ClosingTag) for chunk in chunks)


def test_reasoning_left_open_is_closed_by_the_engine_for_an_answer(base_alone: Engine) -> None:
    # The tiny base writes its plain answer and ends its turn, never "</think>": as the real base sometimes does.
    events = list(base_alone.stream(Query(QUESTION, (), replace(base_alone.generation_defaults(), temperature=0.0))))
    stats = next(e.stats for e in events if isinstance(e, Finished))
    done = [e for e in events if isinstance(e, ReasoningDone)]
    assert stats.reasoning_closed_by_app and len(done) == 1 and not done[0].cut_off
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning.strip() == BASE_OUTPUT  # what it wrote first stays its reasoning, with no tag in it
    assert stats.new_tokens > stats.reasoning_tokens  # the answer pass generated after the closing tag


def test_no_closing_pass_at_the_token_limit_or_with_the_cards_prompt(base_alone: Engine, engine: Engine) -> None:
    limited = list(base_alone.stream(Query(QUESTION, (), replace(base_alone.generation_defaults(), max_new_tokens=2))))
    stats = next(e.stats for e in limited if isinstance(e, Finished))
    assert stats.hit_token_limit and stats.reasoning_cut_off and not stats.reasoning_closed_by_app
    card = next(e.stats for e in engine.stream(Query(QUESTION)) if isinstance(e, Finished))
    assert not card.reasoning_closed_by_app
