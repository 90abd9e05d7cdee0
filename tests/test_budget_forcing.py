"""Budget forcing (medcot.answer_stream): a reasoning the model left open is closed by the app, the answer follows."""

from __future__ import annotations

import threading
from dataclasses import replace

from medcot.answer_stream import ClosingTag, closing_open_reasoning
from medcot.engine import Engine
from medcot.events import Finished, ReasoningDelta, ReasoningDone
from medcot.request import Query
from tests.helpers.tiny import BASE_OUTPUT
from tests.test_prompt import QUESTION


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
