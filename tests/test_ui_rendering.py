"""medcot.ui.rendering: events as chat messages, stopped and cut-off marks, history to turns and slider values."""

from __future__ import annotations

import pytest

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats
from medcot.ui.answers import AnswerRecord
from medcot.ui.rendering import answer_id, answer_messages, mark_stopped, params_from, turns_from_history
from medcot.ui.stats_line import STATS_PREFIX, format_stats
from tests.helpers.tiny import QUESTIONS


def new_record() -> AnswerRecord:
    return AnswerRecord(QUESTIONS[0], GenerationParams())


def test_history_reasoning_never_reaches_the_prompt(engine: Engine) -> None:
    history = [
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": "SECRET-REASONING", "metadata": {"title": "Reasoning", "status": "done"}},
        {"role": "assistant", "content": [{"type": "text", "text": "Earlier answer."}]},
        {"role": "assistant", "content": f"{STATS_PREFIX} 1 tok/s</sub>"},
        {"role": "user", "content": "question that failed"},
    ]
    turns = turns_from_history(history)
    assert [(t.question, t.answer) for t in turns] == [(QUESTIONS[0], "Earlier answer.")]
    from medcot.prompt import encode_prompt

    text = encode_prompt(engine.loaded.tokenizer, QUESTIONS[1], turns).text
    assert "Earlier answer." in text and "SECRET-REASONING" not in text and STATS_PREFIX not in text


def test_renderer_drops_the_placeholder_accordion_when_the_model_does_not_reason() -> None:
    record = new_record()
    assert answer_messages(record)[0].metadata["status"] == "pending"  # spinner from the first moment
    record.apply(AnswerDelta("Plain answer."))
    assert [m.content for m in answer_messages(record)] == ["Plain answer."]


def test_renderer_yields_fresh_messages_each_time() -> None:
    # Gradio streams diffs between yields: reusing message objects would send nothing.
    record = new_record()
    first = answer_messages(record)
    record.apply(ReasoningDelta("step"))
    record.apply(ReasoningDone(1.24))
    second = answer_messages(record)
    assert first[0].content == "" and first[0].metadata["status"] == "pending"
    assert second[0].content == "step" and second[0].metadata == {
        "title": "Reasoning",
        "status": "done",
        "duration": 1.2,
    }


def test_cut_off_reasoning_is_flagged_and_explained() -> None:
    record = new_record()
    record.apply(ReasoningDelta("long thought"))
    record.apply(ReasoningDone(3.0, cut_off=True))
    stats = Stats(10, 64, 64, 0, 0.1, 3.0, True, True, False, 0)
    record.apply(Finished(stats))
    reasoning, stats_message = answer_messages(record)
    assert reasoning.metadata["log"] == "cut off"
    assert answer_id({"metadata": stats_message.metadata}) == record.id  # the stats line points at the record
    assert record.notes == ("The token limit (64 tokens) cut the reasoning off before an answer.",)
    assert "Max new tokens" in stats_message.content and "cut off by the token limit" in stats_message.content
    assert "cut off" not in format_stats(Stats(10, 8, 4, 4, 0.1, 1.0, False, False, False, 0))


def test_mark_stopped_leaves_no_spinner() -> None:
    history = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "half a thought", "metadata": {"title": "Reasoning", "status": "pending"}},
    ]
    settled = mark_stopped(history)
    assert settled[1]["metadata"] == {"title": "Reasoning", "status": "done", "log": "stopped"}
    assert history[1]["metadata"]["status"] == "pending"  # the input is not mutated


@pytest.mark.parametrize(
    ("history", "message"),
    [("not a list", "list of messages"), ([1, 2], "role and content"), ([{"content": "x"}], "role and content")],
)
def test_bad_history_is_refused_readably(history: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        turns_from_history(history)


def test_params_from_validates_and_fills_defaults() -> None:
    assert params_from(None, None, None, None, None) == GenerationParams()
    assert params_from(10, "0.5", 0.9, 5.0, 1.1) == GenerationParams(10, 0.5, 0.9, 5, 1.1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        params_from(0, 1.0, 0.9, 5, 1.0)
    primed = GenerationParams(100, 0.3, 0.95, 64, 1.15)
    assert params_from(None, None, 0.5, None, None, primed) == GenerationParams(100, 0.3, 0.5, 64, 1.15)


def test_with_show_reasoning_off_the_answer_comes_without_its_accordion_but_the_record_keeps_it() -> None:
    record = new_record()
    record.apply(ReasoningDelta("private thought"))
    assert answer_messages(record, show_reasoning=False) == []  # nothing shown while the model reasons
    record.apply(ReasoningDone(1.0))
    record.apply(AnswerDelta("The answer."))
    record.apply(Finished(Stats(10, 8, 4, 4, 0.1, 1.0, False, False, False, 0)))
    answer, stats = answer_messages(record, show_reasoning=False)
    assert answer.content == "The answer." and not answer.metadata and stats.content.startswith(STATS_PREFIX)
    assert record.reasoning == "private thought" and record.reply().reasoning == "private thought"
