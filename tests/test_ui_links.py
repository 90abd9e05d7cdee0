"""medcot.ui.links: deep links (?q=, &run=1, &compare=1), and the README's links that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr
import pytest

from medcot.ui.layout import EXAMPLES
from medcot.ui.links import deep_link


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (None, False, False, None)),
        ({"q": "What is edema?"}, ("What is edema?", False, False, None)),
        ({"q": "  What is edema?\x00 ", "run": "1"}, ("What is edema?", True, False, None)),
        ({"q": "What is edema?", "run": "yes", "compare": "true"}, ("What is edema?", True, True, None)),
        ({"q": "What is edema?", "run": "0", "compare": "no"}, ("What is edema?", False, False, None)),
        ({"run": "1", "compare": "1"}, (None, False, True, None)),  # nothing to run
        ({"q": "\x00\x01", "run": "1"}, (None, False, False, None)),
    ],
)
def test_deep_link(query: dict[str, str], expected: tuple[Any, ...]) -> None:
    assert deep_link(query) == expected


def test_deep_link_with_a_question_too_long_is_refused_with_a_warning() -> None:
    question, run, _, warning = deep_link({"q": "x" * 9000, "run": "1"})
    assert question is None and not run
    assert warning and "too long" in warning


def test_readme_links_and_snippets_match_the_app() -> None:
    """The README's deep links use the parameters the page reads and ask real questions; its web-component script
    is the Gradio version the Space runs."""
    import re
    from urllib.parse import parse_qs, urlsplit

    from medcot.ui.links import QUERY_COMPARE, QUERY_QUESTION, QUERY_RUN

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"https://[^\s)\"']+\?q=[^\s)\"']+", readme)
    assert len(links) >= 4
    for url in links:
        query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
        assert set(query) <= {QUERY_QUESTION, QUERY_RUN, QUERY_COMPARE}, url
        question, run, _, warning = deep_link(query)
        assert question and warning is None and run == (QUERY_RUN in query), url
    assert any(deep_link({"q": parse_qs(urlsplit(u).query)["q"][0]})[0] in EXAMPLES for u in links)
    scripts = re.findall(r"gradio\.s3-us-west-2\.amazonaws\.com/([\d.]+)/gradio\.js", readme)
    assert scripts and set(scripts) == {gr.__version__}
    assert "open-in-hf-spaces-md.svg" in readme
