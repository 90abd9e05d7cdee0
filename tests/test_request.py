"""medcot.request: the question's checks and what a client asked (Query), passed along whole."""

from __future__ import annotations

import pytest

from medcot.errors import InputError
from medcot.request import MAX_QUESTION_CHARS, clean_question


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
