"""medcot.engine: answers as events, stats, cancellation, base comparison and input checks."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from tiny import ADAPTER_ANSWER, ADAPTER_OUTPUT, ADAPTER_REASONING, BASE_OUTPUT

from medcot.config import GenerationParams, Settings
from medcot.engine import MAX_QUESTION_CHARS, Engine, Finished, InputError, Stats, clean_question
from medcot.loading import ModelLoadError
from medcot.prompt import PromptTooLongError, Turn, encode_prompt
from medcot.reasoning import AnswerDelta, ReasoningDelta, ReasoningDone

QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)


def no_generation_thread(within: float = 1.0) -> bool:
    deadline = time.monotonic() + within
    while any(t.name == "medcot-generate" for t in threading.enumerate()):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_answer_and_reasoning_from_the_adapter(engine: Engine) -> None:
    answer = engine.ask(QUESTION, params=GREEDY)
    assert answer.answer == ADAPTER_ANSWER
    assert answer.reasoning == ADAPTER_REASONING
    kinds = [type(e) for e in answer.events]
    assert kinds[-1] is Finished and kinds.count(Finished) == 1
    assert kinds.count(ReasoningDone) == 1
    done = kinds.index(ReasoningDone)
    assert set(kinds[:done]) == {ReasoningDelta}
    assert set(kinds[done + 1 : -1]) == {AnswerDelta}


def test_stats_add_up(engine: Engine) -> None:
    stats = engine.ask(QUESTION, params=GREEDY).stats
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
    answer = engine.ask(QUESTION, params=replace(GREEDY, max_new_tokens=10))
    stats = answer.stats
    assert stats.new_tokens == 10
    assert stats.hit_token_limit and stats.reasoning_cut_off and not stats.stopped
    assert (stats.reasoning_tokens, stats.answer_tokens) == (10, 0)
    assert answer.answer == "" and answer.reasoning and ADAPTER_REASONING.startswith(answer.reasoning)
    dones = [e for e in answer.events if isinstance(e, ReasoningDone)]
    assert len(dones) == 1 and dones[0].cut_off


def test_base_comparison_needs_unmerged_and_leaves_the_adapter_on(engine: Engine, unmerged_engine: Engine) -> None:
    with pytest.raises(InputError, match="MEDCOT_MERGE=0"):
        engine.ask(QUESTION, params=GREEDY, use_adapter=False)
    base = unmerged_engine.ask(QUESTION, params=GREEDY, use_adapter=False)
    assert base.answer == BASE_OUTPUT and base.reasoning == ""
    assert base.stats.reasoning_tokens == 0 and base.stats.answer_tokens == base.stats.new_tokens
    assert unmerged_engine.ask(QUESTION, params=GREEDY).answer == ADAPTER_ANSWER  # adapter back on


def test_cancel_before_start_stops_after_one_token(engine: Engine) -> None:
    cancel = threading.Event()
    cancel.set()
    events = list(engine.stream(QUESTION, params=GREEDY, cancel=cancel))
    stats = events[-1].stats
    assert stats.stopped and stats.new_tokens == 1 and not stats.hit_token_limit
    assert no_generation_thread()


def test_closing_the_stream_stops_generation(engine: Engine) -> None:
    stream = engine.stream(QUESTION, params=GREEDY)
    first = next(stream)
    assert isinstance(first, ReasoningDelta)
    stream.close()
    assert no_generation_thread()
    assert engine.ask(QUESTION, params=GREEDY).answer == ADAPTER_ANSWER  # the engine is still usable


def test_history_over_the_budget_drops_turns(engine: Engine) -> None:
    history = [Turn(f"Earlier question {i}?", f"Earlier answer {i}.") for i in range(3)]
    tokenizer = engine.loaded.tokenizer
    fits_one = len(encode_prompt(tokenizer, QUESTION, history[-1:]).input_ids)
    small = Engine(replace(engine.settings, max_input_tokens=fits_one), engine.loaded)
    answer = small.ask(QUESTION, history, params=GREEDY)
    assert answer.stats.turns_dropped == 2
    assert answer.stats.prompt_tokens == fits_one
    tiny = Engine(replace(engine.settings, max_input_tokens=64), engine.loaded)
    with pytest.raises(PromptTooLongError, match="64"):
        tiny.ask(QUESTION, history, params=GREEDY)


def test_parameters_are_validated(engine: Engine) -> None:
    with pytest.raises(ValueError, match=r"^temperature"):
        engine.ask(QUESTION, params=GenerationParams(temperature=float("nan")))
    with pytest.raises(ValueError, match=r"^max_new_tokens"):
        engine.ask(QUESTION, params=GenerationParams(max_new_tokens=0))


def test_default_params_come_from_settings(engine: Engine) -> None:
    two = Engine(replace(engine.settings, max_new_tokens=2), engine.loaded)
    stats = two.ask(QUESTION).stats
    assert stats.new_tokens == 2 and stats.hit_token_limit


# -------------------------------------------------------------------------------------------------- questions


def test_clean_question() -> None:
    assert clean_question("  What\x00 is\x07 edema?\n") == "What is edema?"
    assert clean_question("Line one\n\tLine two 🫀 é") == "Line one\n\tLine two 🫀 é"
    assert clean_question("lone \ud800 surrogate") == "lone ? surrogate"
    assert len(clean_question("x" * MAX_QUESTION_CHARS)) == MAX_QUESTION_CHARS


@pytest.mark.parametrize("bad", ["", "   \n\t", "\x00\x01"])
def test_empty_question_is_refused(bad: str) -> None:
    with pytest.raises(InputError, match="Please type a question"):
        clean_question(bad)


def test_other_bad_questions_are_refused() -> None:
    with pytest.raises(InputError, match="text"):
        clean_question(42)
    with pytest.raises(InputError, match="too long"):
        clean_question("x" * (MAX_QUESTION_CHARS + 1))


def test_empty_question_through_the_engine(engine: Engine) -> None:
    with pytest.raises(InputError):
        list(engine.stream("  "))


# ---------------------------------------------------------------------------------------------------- loading


def test_not_loaded_yet() -> None:
    waiting = Engine(Settings())
    assert not waiting.ready
    assert "Waiting to load" in waiting.status()
    with pytest.raises(ModelLoadError, match="still loading"):
        waiting.require_model()
    assert not waiting.wait_until_loaded(0.01)


def test_background_load_reports_progress(tiny_settings: Settings) -> None:
    seen: list[str] = []
    background = Engine(tiny_settings)
    thread = threading.Thread(target=background.load, kwargs={"on_progress": lambda m, f: seen.append(m)})
    thread.start()
    assert background.wait_until_loaded(120)
    thread.join()
    assert background.ready and background.error is None
    assert seen[-1] == "Model ready" and background.progress == ("Model ready", 1.0)
    assert background.status() == background.loaded.describe() + "."
