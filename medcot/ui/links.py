"""Deep links: ?q=<question> pre-fills the question, &run=1 also asks it, &compare=1 turns the comparison on."""

from __future__ import annotations

from collections.abc import Mapping

from medcot.errors import InputError
from medcot.request import clean_question

QUERY_QUESTION, QUERY_RUN, QUERY_COMPARE = "q", "run", "compare"
_YES = ("1", "true", "yes", "on")
# Asks the pre-filled question of a ?run=1 link, as a click on the send button would (from the browser, so the
# chat's own submit chain runs: its Stop button, its history, its queue).
AUTORUN_JS = """
(run) => {
  if (!run) return;
  const root = document.querySelector("gradio-app")?.shadowRoot ?? document;
  const send = root.querySelector("#question button.submit-button");
  if (send) send.click();
}
"""


def deep_link(query: Mapping[str, str]) -> tuple[str | None, bool, bool, str | None]:
    """Read ?q=, &run= and &compare= from the page URL: (question or None, run it, compare, a warning or None).

    The question is checked as any question is; a bad one is not pre-filled (and never run), with a warning.
    """
    raw = query.get(QUERY_QUESTION)
    run = str(query.get(QUERY_RUN, "")).strip().lower() in _YES
    compare = str(query.get(QUERY_COMPARE, "")).strip().lower() in _YES
    if raw is None or not "".join(ch for ch in str(raw) if ch.isprintable()).strip():
        return None, False, compare, None  # nothing to fill in: not worth a warning
    try:
        question = clean_question(str(raw))
    except InputError as exc:
        return None, False, compare, f"The question in the link was not used: {exc}"
    return question, run, compare, None
