"""medcot.reasoning: the incremental <think>…</think> parser."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from medcot.events import AnswerDelta, Event, ReasoningDelta, ReasoningDone
from medcot.reasoning import ThinkParser, split_reasoning

TAG = re.compile(r"</?think>", re.I)


def parse(chunks: Iterable[str], prefilled: bool = False) -> tuple[list[Event], ThinkParser]:
    parser = ThinkParser(prefilled=prefilled)
    events: list[Event] = []
    for chunk in chunks:
        events += parser.feed(chunk)
    events += parser.close()
    return events, parser


def texts(events: list[Event]) -> tuple[str, str]:
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer


def dones(events: list[Event]) -> list[ReasoningDone]:
    return [e for e in events if isinstance(e, ReasoningDone)]


def test_whole_output_in_order() -> None:
    events, parser = parse(["<think>\nHeart failure.\n</think>\nStart a loop diuretic."])
    assert texts(events) == ("Heart failure.\n", "Start a loop diuretic.")
    assert (parser.reasoning, parser.answer) == texts(events)
    kinds = [type(e) for e in events]
    assert kinds == [ReasoningDelta, ReasoningDone, AnswerDelta]
    assert dones(events)[0].cut_off is False
    assert parser.saw_reasoning and not parser.in_reasoning


def test_tags_split_across_chunks() -> None:
    text = "<think>\nReasoning here.\n</think>\nThe answer."
    for size in (1, 2, 3, 5):
        events, _ = parse(text[i : i + size] for i in range(0, len(text), size))
        assert texts(events) == ("Reasoning here.\n", "The answer.")
        assert len(dones(events)) == 1
        assert not any(TAG.search(e.text) or "<" in e.text for e in events if not isinstance(e, ReasoningDone))


def test_split_tag_pieces_are_held_back_until_decided() -> None:
    parser = ThinkParser()
    assert parser.feed("<thi") == []
    assert parser.feed("nk>Because") == [ReasoningDelta("Because")]
    assert parser.feed(" x</th") == [ReasoningDelta(" x")]
    events = parser.feed("ink>Answer")
    assert isinstance(events[0], ReasoningDone) and events[1:] == [AnswerDelta("Answer")]


def test_tags_are_case_insensitive() -> None:
    events, _ = parse(["<THINK>Upper", " case</Think>", "Answer"])
    assert texts(events) == ("Upper case", "Answer")
    assert split_reasoning(["<ThInK>r</THINK>a"]) == ("r", "a")


def test_unclosed_think_at_the_end_is_cut_off() -> None:
    events, parser = parse(["<think>\nStill thinking about", " the dose"])
    assert texts(events) == ("Still thinking about the dose", "")
    assert isinstance(events[-1], ReasoningDone) and events[-1].cut_off is True
    assert len(dones(events)) == 1
    assert not parser.in_reasoning


def test_unclosed_think_keeps_a_trailing_partial_tag_as_reasoning() -> None:
    events, _ = parse(["<think>dose", " </thi"])
    assert texts(events) == ("dose </thi", "")
    assert dones(events)[0].cut_off is True


def test_no_think_at_all_is_all_answer() -> None:
    events, parser = parse(["Just ", "an answer."])
    assert texts(events) == ("", "Just an answer.")
    assert dones(events) == []
    assert not parser.saw_reasoning


def test_answer_starting_like_a_tag_is_not_lost() -> None:
    assert split_reasoning(["<", "b>bold</b>"]) == ("", "<b>bold</b>")
    assert split_reasoning(["<thin", "king cap"]) == ("", "<thinking cap")
    assert split_reasoning(["<thi"]) == ("", "<thi")


def test_prefilled_with_repeated_think() -> None:
    events, _ = parse(["<think>\nAlready open", "\n</think>\nAnswer"], prefilled=True)
    assert texts(events) == ("Already open\n", "Answer")
    assert len(dones(events)) == 1 and dones(events)[0].cut_off is False


def test_prefilled_without_repeated_think() -> None:
    assert split_reasoning(["Reasoning</think>Answer"], prefilled=True) == ("Reasoning", "Answer")
    events, _ = parse(["only reasoning"], prefilled=True)
    assert texts(events) == ("only reasoning", "")
    assert dones(events)[0].cut_off is True


def test_stray_close_tag_in_answer_never_shows() -> None:
    events, _ = parse(["<think>r</think>Answer", " one</th", "ink> and </THINK>two"])
    assert texts(events) == ("r", "Answer one and two")
    assert len(dones(events)) == 1
    assert all(not TAG.search(e.text) for e in events if not isinstance(e, ReasoningDone))
    assert split_reasoning(["No reasoning </think>here"]) == ("", "No reasoning here")


def test_repeated_think_inside_reasoning_and_answer_never_shows() -> None:
    assert split_reasoning(["<think>a<think> b</think>c<think>d"]) == ("ab", "cd")


def test_whitespace_after_tags_is_skipped() -> None:
    assert split_reasoning(["\n \t<think>\n\n  Reasoning.</think>\n\n  Answer."]) == ("Reasoning.", "Answer.")
    # The same when the whitespace arrives in chunks of its own.
    assert split_reasoning(["  ", "<think>", "\n", " ", "R", "</think>", "\n", "  ", "A"]) == ("R", "A")
    # Inner whitespace is kept.
    assert split_reasoning(["<think>a\n\nb</think>c  d"]) == ("a\n\nb", "c  d")


def test_non_ascii_text_keeps_its_place() -> None:
    # "İ".lower() is two characters: a parser that indexes lower-cased text would shift the tag positions.
    assert split_reasoning(["<think>İstanbul İ</think>Answer İ"]) == ("İstanbul İ", "Answer İ")
    assert split_reasoning(["<think>ẞ ß 🫀", "</think>Ǆ"]) == ("ẞ ß 🫀", "Ǆ")


def test_duration_uses_the_clock() -> None:
    ticks = iter([10.0, 12.5])
    parser = ThinkParser(clock=lambda: next(ticks))
    parser.feed("<think>r")
    events = parser.feed("</think>a")
    assert dones(events) == [ReasoningDone(2.5, cut_off=False)]


def test_nothing_after_close() -> None:
    parser = ThinkParser()
    parser.feed("<think>r")
    parser.close()
    assert parser.feed("more") == []
    assert parser.close() == []


# ----------------------------------------------------------------------------------------------------- properties

FRAGMENTS = ["<", "/", "think", ">", "THINK", "Think", "<think>", "</think>", "</", "a", "b", "İ", "ß", " ", "\n"]
FRAGMENTS += ["\t"]


@st.composite
def chunked_text(draw: st.DrawFn) -> tuple[str, list[str]]:
    text = "".join(draw(st.lists(st.sampled_from(FRAGMENTS), max_size=40)))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    return text, [text[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=300, deadline=None)
@given(chunked_text(), st.booleans())
def test_any_chunking_parses_like_the_whole_text(case: tuple[str, list[str]], prefilled: bool) -> None:
    text, chunks = case
    assert "".join(chunks) == text
    whole_events, whole = parse([text], prefilled)
    events, parser = parse(chunks, prefilled)
    assert (parser.reasoning, parser.answer) == (whole.reasoning, whole.answer)
    assert texts(events) == (parser.reasoning, parser.answer)
    assert [d.cut_off for d in dones(events)] == [d.cut_off for d in dones(whole_events)]
    assert len(dones(events)) <= 1
    # No single event carries a tag, and no reasoning follows the end of the reasoning.
    assert all(not TAG.search(e.text) for e in events if not isinstance(e, ReasoningDone))
    kinds = [type(e) for e in events]
    for later_than in (ReasoningDone, AnswerDelta):
        if later_than in kinds:
            assert ReasoningDelta not in kinds[kinds.index(later_than) :]


def strip_think(text: str) -> str:
    """The card's own post-processing snippet."""
    return re.sub(r"<think>.*?</think>\s*", "", text, flags=re.S | re.I).strip()


@settings(max_examples=200, deadline=None)
@given(
    st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=30),
    st.text(st.characters(blacklist_characters="<>", blacklist_categories=("Cs",)), max_size=30),
    st.sampled_from(["", "\n", " \n "]),
    st.sampled_from(["<think>", "<THINK>", "<Think>"]),
    st.data(),
)
def test_answer_matches_the_cards_strip_think(
    reasoning: str, answer: str, gap: str, opener: str, data: st.DataObject
) -> None:
    text = f"{gap}{opener}{reasoning}</think>{gap}{answer}"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    bounds = [0, *cuts, len(text)]
    parsed_reasoning, parsed_answer = split_reasoning(text[a:b] for a, b in itertools.pairwise(bounds))
    assert parsed_answer.strip() == strip_think(text)
    assert parsed_reasoning.strip() == reasoning.strip()
