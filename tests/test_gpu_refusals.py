"""spaces' refusals as plain text: the messages here are the ones spaces/zero/client.py builds, through its own code
where it can be called (its HTML message class, its timedelta), verbatim otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from spaces.zero.client import html_string

from medcot.gpu_refusals import CUT_OFF, cut_or_failed, in_words, plain_text


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0, "1 s"), (0.2, "1 s"), (45, "45 s"), (60, "1 min"), (271, "4 min 31 s"), (7200, "2 h"), (7500, "2 h 5 min")],
)
def test_waits_in_words(seconds: float, words: str) -> None:
    assert in_words(seconds) == words


def test_a_quota_refusal_keeps_its_words_with_the_wait_in_words() -> None:
    message = (
        "You have exceeded your free ZeroGPU quota (35s requested vs. 20s left). "
        f"Try again in {timedelta(seconds=271)}. "
        "Authenticate with a Hugging Face token for more quota - https://huggingface.co/settings/tokens"
    )
    assert plain_text(message) == (
        "You have exceeded your free ZeroGPU quota (35s requested vs. 20s left). Try again in 4 min 31 s. "
        "Authenticate with a Hugging Face token for more quota - https://huggingface.co/settings/tokens"
    )
    assert plain_text(f"Try again in {timedelta(hours=1, minutes=2, seconds=3)}") == "Try again in 1 h 2 min"
    assert plain_text(f"Try again in {timedelta(days=1, seconds=5, microseconds=7)}.") == "Try again in 24 h."


def test_an_html_refusal_becomes_text_with_its_link() -> None:
    link = '<a style="white-space: nowrap" href="https://huggingface.co/join">Create a free account</a>'
    message = html_string(
        f"No GPU was available after 60s. {link} to get a higher priority in ZeroGPU queues.",
        "No GPU was available after 60s [Create a free account](https://huggingface.co/join) to get a higher "
        "priority in ZeroGPU queues.",
    )
    expected = (
        "No GPU was available after 60s. Create a free account (https://huggingface.co/join) to get a higher "
        "priority in ZeroGPU queues."
    )
    assert plain_text(message) == expected
    assert plain_text(str.__str__(message)) == expected  # the HTML itself, as JSON would carry it
    assert plain_text("The requested GPU duration (400s) is larger than the maximum allowedSubscribe to PRO") == (
        "The requested GPU duration (400s) is larger than the maximum allowed. Subscribe to PRO"
    )


def test_a_dead_worker_reads_as_cut_only_once_it_held_the_gpu_for_most_of_its_ask() -> None:
    assert cut_or_failed(20, 19.0, 0.8) == (True, CUT_OFF.format(asked=20))
    cut, message = cut_or_failed(20, 3.2, 0.8)
    assert not cut
    assert message == "The GPU stopped while answering (after 4 s of the 20 s asked for). Please ask again."
    assert cut_or_failed(20, None, 0.8) == (False, "The GPU stopped while answering. Please ask again.")
