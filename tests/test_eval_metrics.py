"""Each eval metric on crafted outputs: a loop is counted as a loop, a cut-off as a cut-off, and so on."""

from __future__ import annotations

import pytest

from benchmarks.eval_metrics import (
    TARGETS,
    chosen_options,
    is_empty,
    loop_reason,
    match,
    options,
    overlap,
    score,
    summarize,
)

MC_QUESTION = "Which valve is most affected?\nA. Mitral\nB. Aortic\nC. Tricuspid\nD. Pulmonary"
PROSE = (
    "Orthopnea, raised jugular venous pressure and bilateral pitting edema point to fluid overload from heart "
    "failure. The first aim is to relieve congestion, which a loop diuretic such as furosemide does within hours; "
    "an ACE inhibitor and a beta blocker follow once the patient is stable, and the cause is looked for with an "
    "echocardiogram."
)


def closed(question: str, reasoning: str, answer: str, **kwargs: object):
    return score(
        question, reasoning, answer, saw_reasoning=True, reasoning_closed=True, hit_token_limit=False, **kwargs
    )


def test_a_closed_think_block_with_an_answer_is_compliant() -> None:
    scored = closed("Q?", "Fluid overload suggests heart failure.", "A loop diuretic.")
    assert scored.compliant and scored.reasoning_shown and scored.usable
    assert not scored.empty and scored.loop is None and not scored.cut_off
    assert (scored.reasoning_words, scored.answer_words) == (5, 3)


def test_an_unclosed_reasoning_block_is_shown_but_not_compliant() -> None:
    scored = score(
        "Q?", "Fluid overload suggests", "", saw_reasoning=True, reasoning_closed=False, hit_token_limit=True
    )
    assert scored.reasoning_shown and not scored.compliant
    assert scored.cut_off and scored.empty and not scored.usable


def test_an_answer_without_reasoning_is_usable_but_not_compliant() -> None:
    scored = score("Q?", "", "Furosemide.", saw_reasoning=False, reasoning_closed=False, hit_token_limit=False)
    assert scored.usable and not scored.compliant and not scored.reasoning_shown


def test_a_closed_block_with_nothing_after_it_is_not_compliant() -> None:
    scored = closed("Q?", "Some reasoning here.", "  \n")
    assert scored.empty and not scored.compliant and not scored.usable


@pytest.mark.parametrize("answer", ["", "   ", "\n\n", "...", "—", "**"])
def test_answers_without_letters_or_digits_are_empty(answer: str) -> None:
    assert is_empty(answer)


@pytest.mark.parametrize("answer", ["No.", "B", "5 mg"])
def test_short_real_answers_are_not_empty(answer: str) -> None:
    assert not is_empty(answer)


def test_a_line_written_three_times_is_a_loop() -> None:
    # The first loop: the base writing the next case's labels over and over.
    text = "Patient:\nAnswer: Corrected by the medical professional.\n" * 3
    assert "3 times" in (loop_reason(text) or "")
    assert not closed("Q?", "", text).usable


def test_a_line_written_twice_is_not_a_loop() -> None:
    assert loop_reason("The patient has edema.\nThe patient has edema.\nIt is from the drug.") is None


def test_a_lettered_list_of_one_answer_is_a_loop() -> None:
    # The second loop: "a. Hypothyroidism b. Hypothyroidism c. …" through the alphabet, on one line.
    text = " ".join(f"{chr(97 + i % 26) * (1 + i // 26)}. Hypothyroidism" for i in range(40))
    assert "trigrams" in (loop_reason(text) or "")


def test_a_word_repeated_to_the_token_limit_is_a_loop() -> None:
    text = "The most typical abnormality is hypokalemia in the" + " bloodstream." * 60
    assert loop_reason(text) is not None


def test_ordinary_prose_is_not_a_loop() -> None:
    assert loop_reason(PROSE) is None
    assert loop_reason(PROSE + "\n" + PROSE) is None  # twice is a repeat, not yet a loop: 50% trigrams distinct


def test_short_text_is_never_an_ngram_loop() -> None:
    assert loop_reason("edema edema edema edema") is None  # fewer than 30 words: the ratio means nothing


def test_the_token_limit_counts_as_a_cut_off() -> None:
    scored = score("Q?", "", "An answer that", saw_reasoning=False, reasoning_closed=False, hit_token_limit=True)
    assert scored.cut_off and scored.usable


def test_multiple_choice_options_are_parsed() -> None:
    assert options(MC_QUESTION) == {"A": "Mitral", "B": "Aortic", "C": "Tricuspid", "D": "Pulmonary"}
    assert options("What is the cause?") == {}


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("C. Tricuspid", True),
        ("The answer is (C).", True),
        ("C) because of the right heart", True),
        ("The tricuspid valve, from venous injection.", True),
        ("A. Mitral", False),
        ("Either the mitral or the tricuspid valve.", False),  # two options named: no single choice
        ("A patient who injects drugs gets right-sided lesions.", False),  # "A" the article is no choice
        ("It depends on the organism.", False),
    ],
)
def test_multiple_choice_match(answer: str, expected: bool) -> None:
    assert match(MC_QUESTION, answer, "C") is expected


def test_a_bare_capital_is_not_taken_as_an_option() -> None:
    assert chosen_options("A young patient", options(MC_QUESTION)) == set()


def test_accepted_terms_match_at_a_word_start() -> None:
    accept = ["hypophosphat", "low phosphate"]
    assert match("Q?", "Hypophosphatemia is the hallmark.", None, accept)
    assert match("Q?", "A LOW phosphate level.", None, accept)
    assert not match("Q?", "Hyperkalemia.", None, accept)
    assert not match("Q?", "nonhypophosphatemic", None, accept)


def test_a_short_reference_is_its_own_accepted_term_and_a_long_one_is_not() -> None:
    assert match("Q?", "It is naloxone, given IV.", "Naloxone.") is True
    assert match("Q?", "Something else.", "Naloxone.") is False
    assert match("Q?", "Anything.", "A long reference answer that explains the whole reasoning in detail.") is None
    assert match("Q?", "Anything.", None) is None


def test_overlap_is_content_word_f1_against_long_references() -> None:
    reference = "Start a loop diuretic such as furosemide to relieve the congestion of heart failure."
    assert overlap("Furosemide relieves congestion.", "Naloxone.") is None
    assert overlap("Unrelated words entirely.", reference) == 0.0
    same = overlap(reference, reference)
    partial = overlap("Give furosemide, a loop diuretic.", reference)
    assert same == pytest.approx(1.0)
    assert partial is not None and 0.0 < partial < 1.0


def test_summary_rates_and_targets() -> None:
    good = closed("Q?", "Reasoning.", "Answer.", reference="Answer", new_tokens=40, tokens_per_second=30.0)
    cut = score("Q?", "Reasoning", "", saw_reasoning=True, reasoning_closed=False, hit_token_limit=True)
    looped = closed("Q?", "", "Same line again here.\n" * 3)
    summary = summarize([good, good, cut, looped])
    assert summary["questions"] == 4
    assert summary["usable"] == 0.5 and summary["empty"] == 0.25 and summary["loop"] == 0.25
    assert summary["cut_off"] == 0.25 and summary["ended_before_limit"] == 0.75
    assert summary["compliant"] == 0.5 and summary["reasoning_shown"] == 0.75
    assert summary["match"] == 1.0 and summary["match_questions"] == 2  # only the answers with a reference
    assert summary["tokens_per_second"] == 30.0
    assert summary["targets_met"] == {"usable": False, "reasoning_shown": True, "ended_before_limit": False}
    assert set(summary["targets_met"]) == set(TARGETS)
