"""medcot.ui.history: the chats' messages matched to their answer records for the export (never read back from the
page's Markdown)."""

from __future__ import annotations

from typing import Any

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats, format_stats
from medcot.ui.answers import AnswerRecord, AnswerStore
from medcot.ui.history import conversation_from, exchanges_from_history, is_settled
from medcot.ui.rendering import BASE_LABEL, NOT_RUN_MARK, as_dict, ending_message

STATS = Stats(12, 48, 40, 8, 0.12, 1.0, False, False, False, 0)
CUT = Stats(12, 10, 10, 0, 0.12, 1.0, True, True, False, 0)
PARAMS = GenerationParams(temperature=0.0)


def answered(question: str, reasoning: str, answer: str, stats: Stats, use_adapter: bool = True) -> AnswerRecord:
    record = AnswerRecord(question, PARAMS, use_adapter)
    for event in (ReasoningDelta(reasoning), ReasoningDone(1.0, cut_off=stats.reasoning_cut_off), AnswerDelta(answer)):
        record.apply(event)
    record.apply(Finished(stats))
    return record


def end(record: AnswerRecord, content: str | None = None) -> dict[str, Any]:
    return as_dict(ending_message(content or format_stats(record.stats), record))


STORE = AnswerStore()
R1 = STORE.add("s", answered("Q1", "R1", "A1", STATS))
R2 = STORE.add("s", answered("Q2", "half", "", CUT))
B2 = STORE.add("s", answered("Q2", "", "B2", STATS, use_adapter=False))
NOT_RUN = STORE.add("s", AnswerRecord("Q4", PARAMS, use_adapter=False, failure="The base model did not answer."))

HISTORY = [
    {"role": "user", "content": "Q1"},
    {"role": "assistant", "content": "R1", "metadata": {"title": "Reasoning", "status": "done", "duration": 1.0}},
    # What the page shows is not what the export reads: the record holds the answer.
    {"role": "assistant", "content": [{"type": "text", "text": "A1, as the page drew it"}], "metadata": None},
    end(R1, "<sub>⏱ some stats line the export never parses</sub>"),
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "half", "metadata": {"title": "Reasoning", "status": "done", "log": "cut off"}},
    end(R2),
    {"role": "user", "content": "Q3 failed"},
]
BASE_HISTORY = [
    {"role": "user", "content": "Q2"},
    {"role": "assistant", "content": "B2", "metadata": None},
    end(B2),
]


def test_each_reply_comes_from_the_record_its_ending_message_points_at() -> None:
    (q1, r1), (q2, r2), (q3, r3) = exchanges_from_history(HISTORY, lambda found: STORE.get("s", found))
    assert (q1, r1.reasoning, r1.answer, r1.notes) == ("Q1", "R1", "A1", ())
    assert r1.stats == "first token 0.12 s · 53.4 tok/s · 48 tokens (40 reasoning · 8 answer)"
    assert (q2, r2.reasoning, r2.answer) == ("Q2", "half", "")
    assert r2.notes == ("The token limit (10 tokens) cut the reasoning off before an answer.",)
    assert (q3, r3) == ("Q3 failed", None)
    assert exchanges_from_history(HISTORY, lambda found: None)[0][1] is None  # another session's ids: nothing
    assert exchanges_from_history("not a list", STORE.get) == [] and exchanges_from_history([1], STORE.get) == []


def test_conversation_pairs_base_answers_with_their_questions(engine: Engine) -> None:
    conversation = conversation_from(HISTORY, BASE_HISTORY, lambda found: STORE.get("s", found), engine, PARAMS)
    assert [e.question for e in conversation.exchanges] == ["Q1", "Q2", "Q3 failed"]
    assert [e.base_reply.answer if e.base_reply else None for e in conversation.exchanges] == [None, "B2", None]
    assert conversation.models["adapter"] == engine.loaded.adapter_id and conversation.models["merged"] is True
    assert conversation.generation["temperature"] == 0.0 and conversation.base_label == BASE_LABEL


def test_an_answer_is_settled_once_a_message_ends_it() -> None:
    assert is_settled([]) and is_settled(HISTORY[:4]) and not is_settled(HISTORY)  # Q3 has nothing after it
    not_run = [{"role": "user", "content": "Q4"}, end(NOT_RUN, NOT_RUN_MARK)]
    assert is_settled(not_run)
    reply = exchanges_from_history(not_run, lambda found: STORE.get("s", found))[0][1]
    assert reply.answer == "" and reply.notes == ("The base model did not answer.",)
