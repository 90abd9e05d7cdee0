"""medcot.ui.history: the chat's messages read back into exchanges for the export."""

from __future__ import annotations

from typing import Any

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import Stats
from medcot.ui.history import conversation_from, exchanges_from_history
from medcot.ui.rendering import BASE_LABEL
from medcot.ui.stats_line import CUT_OFF_NOTICE, format_stats


def stats_message(stats: Stats) -> dict[str, Any]:
    return {"role": "assistant", "content": format_stats(stats), "metadata": None}


STATS = Stats(12, 48, 40, 8, 0.12, 1.0, False, False, False, 0)


CUT = Stats(12, 10, 10, 0, 0.12, 1.0, True, True, False, 0)


HISTORY = [
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "R1", "metadata": {"title": "Reasoning", "status": "done", "duration": 1.0}},
    {"role": "assistant", "content": [{"type": "text", "text": "A1"}], "metadata": None},
    stats_message(STATS),
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "half", "metadata": {"title": "Reasoning", "status": "done", "log": "cut off"}},
    stats_message(CUT),
    {"role": "user", "content": "Q3 failed"},
]


BASE_HISTORY = [
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "B2", "metadata": None},
    stats_message(STATS),
]


def test_exchanges_from_history() -> None:
    (q1, r1), (q2, r2), (q3, r3) = exchanges_from_history(HISTORY)
    assert (q1, r1.reasoning, r1.answer, r1.notes) == ("Q1", "R1", "A1", ())
    assert r1.stats == "first token 0.12 s · 53.4 tok/s · 48 tokens (40 reasoning · 8 answer)"
    assert (q2, r2.reasoning, r2.answer) == ("Q2", "half", "")
    assert "Reasoning cut off by the token limit (no closing tag)." in r2.notes and CUT_OFF_NOTICE not in r2.stats
    assert (q3, r3) == ("Q3 failed", None)
    assert exchanges_from_history("not a list") == [] and exchanges_from_history([1, {"role": "x"}]) == []


def test_conversation_pairs_base_answers_with_their_questions(engine: Engine) -> None:
    conversation = conversation_from(HISTORY, BASE_HISTORY, engine, GenerationParams(temperature=0.0))
    assert [e.question for e in conversation.exchanges] == ["Q1", "Q2", "Q3 failed"]
    assert [e.base_reply.answer if e.base_reply else None for e in conversation.exchanges] == [None, "B2", None]
    assert conversation.models["adapter"] == engine.loaded.adapter_id and conversation.models["merged"] is True
    assert conversation.generation["temperature"] == 0.0 and conversation.base_label == BASE_LABEL
