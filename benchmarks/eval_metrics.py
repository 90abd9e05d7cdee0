"""What the eval measures on one answer, and the summary over a question set.

Every metric is a plain function of the texts and the engine's stats, so that tests can show each one on crafted
outputs. The definitions, in the order the table prints them:

- **compliant**: the reasoning was opened (or opened by the prompt) and closed by the model itself, holds text, and
  a non-empty answer follows it: the card's ``<think>…</think>`` + answer format.
- **closed by app**: the model ended its turn with the reasoning still open and the engine closed it for the answer
  (budget forcing, medcot.answer_stream); such answers are never compliant.
- **reasoning shown**: the reasoning holds text, closed or not (the app's reasoning accordion then has content).
- **empty**: the final answer holds no letter or digit.
- **loop**: the whole output (reasoning + answer) repeats itself: a line of 3 or more words written 3 or more times,
  or, over 30 or more words, fewer than half of its word trigrams distinct. Numbering and list letters ("a.",
  "2)") and other words of 1-2 characters are left out of the trigrams, so "a. X b. X c. X" counts as a loop.
- **usable**: not empty and not a loop (the first target).
- **cut off**: generation stopped at the token limit.
- **match** (only where a reference exists): multiple choice (options "A. …" in the question, the reference a
  letter): the answer names exactly the reference option, by letter ("B.", "(B)") or by its text, and no other.
  Otherwise: one of the accepted terms (the set's ``Accept`` list, or a reference of 5 words or fewer) starts a word
  of the answer. It is a lenient lexical check of the final answer, not a judgement of correctness: an answer
  that says "not furosemide" matches "furosemide".
- **overlap** (long references, e.g. the card's training data): F1 of the content words shared by answer and
  reference.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

LOOP_LINE_WORDS = 3  # a repeated line counts when it has at least this many words
LOOP_LINE_REPEATS = 3
LOOP_MIN_WORDS = 30  # the n-gram test needs enough text to mean anything
LOOP_NGRAM = 3
LOOP_DISTINCT_RATIO = 0.5
SHORT_REFERENCE_WORDS = 5
# Words of 3+ letters too common to say anything about an answer's content (shorter words are never counted).
_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the and for with that this from are was were has have had its his her their they them which what when "
        "where who whom why how will would should could can may might most more than then also into onto such these "
        "those not but all any each other some only very",
    )
)
_OPTION = re.compile(r"^\s*\(?([A-Ea-e])[.)]\s+(\S.*)$", re.M)


def normalize(text: str) -> str:
    """Lower case, every run of non-alphanumerics one space: the form all matching is done on."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text.lower()).split())


def is_empty(answer: str) -> bool:
    return not any(ch.isalnum() for ch in answer)


def loop_reason(text: str) -> str | None:
    """Why ``text`` counts as a loop (see the module's definition), or None."""
    lines = Counter(line for raw in text.splitlines() if len((line := normalize(raw)).split()) >= LOOP_LINE_WORDS)
    repeated = [line for line, count in lines.items() if count >= LOOP_LINE_REPEATS]
    if repeated:
        return f"line written {lines[repeated[0]]} times: {repeated[0][:60]!r}"
    words = [word for word in normalize(text).split() if len(word) > 2]
    if len(words) >= LOOP_MIN_WORDS:
        grams = [tuple(words[i : i + LOOP_NGRAM]) for i in range(len(words) - LOOP_NGRAM + 1)]
        ratio = len(set(grams)) / len(grams)
        if ratio < LOOP_DISTINCT_RATIO:
            return f"only {ratio:.0%} of word trigrams distinct"
    return None


def options(question: str) -> dict[str, str]:
    """A multiple-choice question's options by letter ("A. text" lines); empty for other questions."""
    found = {letter.upper(): text.strip() for letter, text in _OPTION.findall(question)}
    return found if len(found) >= 2 else {}


def chosen_options(answer: str, choices: dict[str, str]) -> set[str]:
    """The options an answer names: by a letter with punctuation ("B.", "(B)", "B)", "B:") or by the option's text.

    A bare capital without punctuation is not taken as a choice: "A patient…" starts many answers.
    """
    chosen = {letter for letter in choices if re.search(rf"(?:^|[\s(])\(?{letter}(?:[.):]|\)|$)", answer)}
    text = f" {normalize(answer)} "
    chosen |= {letter for letter, option in choices.items() if f" {normalize(option)} " in text}
    return chosen


def accepted_terms(reference: str | None, accept: Sequence[str] = ()) -> list[str]:
    terms = [normalize(term) for term in accept if normalize(term)]
    if not terms and reference and len(normalize(reference).split()) <= SHORT_REFERENCE_WORDS:
        terms = [normalize(reference)]
    return terms


def match(question: str, answer: str, reference: str | None, accept: Sequence[str] = ()) -> bool | None:
    """The match score of one answer (see the module's definition); None where it does not apply."""
    choices = options(question)
    letter = (reference or "").strip().rstrip(".").upper()
    if choices and letter in choices:
        return chosen_options(answer, choices) == {letter}
    terms = accepted_terms(reference, accept)
    if not terms:
        return None
    text = normalize(answer)
    return any(re.search(rf"(?:^| ){re.escape(term)}", text) for term in terms)


def _content_words(text: str) -> Counter[str]:
    return Counter(word for word in normalize(text).split() if len(word) > 2 and word not in _STOPWORDS)


def overlap(answer: str, reference: str | None) -> float | None:
    """Content-word F1 between answer and a long reference; None for short or missing references."""
    if not reference or len(normalize(reference).split()) <= SHORT_REFERENCE_WORDS:
        return None
    got, want = _content_words(answer), _content_words(reference)
    shared = sum((got & want).values())
    if not shared:
        return 0.0
    precision, recall = shared / sum(got.values()), shared / sum(want.values())
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Scored:
    """One answer's metrics."""

    compliant: bool
    closed_by_app: bool
    reasoning_shown: bool
    empty: bool
    loop: str | None  # why it is a loop; None when it is not
    cut_off: bool
    answer_words: int
    reasoning_words: int
    new_tokens: int
    tokens_per_second: float
    match: bool | None
    overlap: float | None

    @property
    def usable(self) -> bool:
        return not self.empty and self.loop is None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "usable": self.usable}


def score(
    question: str,
    reasoning: str,
    answer: str,
    *,
    saw_reasoning: bool,
    reasoning_closed: bool,
    hit_token_limit: bool,
    closed_by_app: bool = False,
    new_tokens: int = 0,
    tokens_per_second: float = 0.0,
    reference: str | None = None,
    accept: Sequence[str] = (),
) -> Scored:
    """Score one answer; ``saw_reasoning``/``reasoning_closed`` come from the think parser's events."""
    shown = bool(reasoning.strip())
    empty = is_empty(answer)
    return Scored(
        compliant=saw_reasoning and reasoning_closed and not closed_by_app and shown and not empty,
        closed_by_app=closed_by_app,
        reasoning_shown=shown,
        empty=empty,
        loop=loop_reason(f"{reasoning}\n{answer}"),
        cut_off=hit_token_limit,
        answer_words=len(answer.split()),
        reasoning_words=len(reasoning.split()),
        new_tokens=new_tokens,
        tokens_per_second=tokens_per_second,
        match=match(question, answer, reference, accept),
        overlap=overlap(answer, reference),
    )


# The targets for the embedded base with its defaults: (metric, at least).
TARGETS: dict[str, float] = {"usable": 0.95, "reasoning_shown": 0.70, "ended_before_limit": 0.90}


def summarize(scores: Sequence[Scored]) -> dict[str, Any]:
    """Rates and means over a run; ``match`` over the answers that have a reference only."""
    count = len(scores)

    def rate(values: Sequence[bool]) -> float | None:
        return sum(values) / len(values) if values else None

    matched = [s.match for s in scores if s.match is not None]
    overlaps = [s.overlap for s in scores if s.overlap is not None]
    speeds = [s.tokens_per_second for s in scores if s.tokens_per_second > 0]
    summary: dict[str, Any] = {
        "questions": count,
        "compliant": rate([s.compliant for s in scores]),
        "closed_by_app": rate([s.closed_by_app for s in scores]),
        "reasoning_shown": rate([s.reasoning_shown for s in scores]),
        "empty": rate([s.empty for s in scores]),
        "loop": rate([s.loop is not None for s in scores]),
        "usable": rate([s.usable for s in scores]),
        "cut_off": rate([s.cut_off for s in scores]),
        "ended_before_limit": rate([not s.cut_off for s in scores]),
        "match": rate(matched),
        "match_questions": len(matched),
        "overlap": statistics.fmean(overlaps) if overlaps else None,
        "answer_words": statistics.fmean([s.answer_words for s in scores]) if scores else None,
        "reasoning_words": statistics.fmean([s.reasoning_words for s in scores]) if scores else None,
        "new_tokens": statistics.fmean([s.new_tokens for s in scores]) if scores else None,
        "tokens_per_second": statistics.median(speeds) if speeds else None,
    }
    summary["targets_met"] = {
        name: summary[name] is not None and summary[name] >= low for name, low in TARGETS.items()
    }
    return summary
