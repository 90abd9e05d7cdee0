"""The app in a real browser (issues 3 and 7): reasoning accordion while streaming, collapsed with its duration when
done, expandable; Stop mid-stream; the clinical-use notice, the model status line and the examples; generation stats
and the token-limit notice; the base-model comparison (streamed beside the adapter's answer, stoppable); the export.

The app is served in-process over the tiny real Gemma 3 (tests/tiny.py); its stream is slowed (and, for Stop,
frozen at a known point) by tests/browser.SlowStream so the pending state can be seen. Screenshots are kept
under artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from medcot import DISCLAIMER
from medcot.backends.server import ServerSettings
from medcot.config import Settings
from medcot.engine import Engine
from medcot.ui.compare import COMPARE_LABEL
from medcot.ui.layout import EXAMPLES, SHOW_REASONING_LABEL
from medcot.ui.rendering import ADAPTER_LABEL, BASE_LABEL
from tests.helpers.browser import CHROMIUM, SlowStream, open_page, screenshot_path
from tests.helpers.serving import free_port, serve
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, BASE_OUTPUT, QUESTIONS
from tests.helpers.ui_calls import expected_feedback

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)

TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)
# The thought accordion's header is a div with role=button whose name is its title, then "stopped"/"(1.2s)".
TITLE = re.compile(r"^\s*Reasoning\b")
DURATION = re.compile(r"^\s*Reasoning\s*\(\d+(\.\d+)?m?s\)\s*$")
# The stats line under an answer, as the page shows it.
STATS = re.compile(r"⏱ first token \d+\.\d\d s · \d+\.\d tok/s · \d+ tokens \(\d+ reasoning · \d+ answer\)")


@pytest.fixture
def page(chromium: Browser, app_url: str, slow: SlowStream) -> Iterator[Page]:
    slow.reset()
    with open_page(chromium, app_url) as opened:
        yield opened
    slow.reset()  # never leave a frozen stream behind


@pytest.fixture(scope="module")
def base_only_url(tiny_settings: Settings) -> Iterator[str]:
    """The app serving the base model alone (MEDCOT_ADAPTER empty): nothing to compare."""
    alone = Engine(replace(tiny_settings, adapter=None)).load()
    assert alone.ready, alone.error
    with serve(alone) as url:
        yield url


@pytest.fixture(scope="module")
def unreachable_server_url(tiny_settings: Settings) -> Iterator[str]:
    """The app in server mode with nothing listening at the server's address: every answer fails, readably."""
    down = Engine(replace(tiny_settings, backend=ServerSettings(f"http://127.0.0.1:{free_port()}/v1"))).load()
    assert down.ready, down.error  # an unreachable server is no load failure: the status line says why
    with serve(down) as url:
        yield url


# ------------------------------------------------------------------------------------------------------ helpers


def chat(page: Page) -> Locator:
    return page.locator("#chat")


def spinners(page: Page) -> Locator:
    # Gradio's pending spinner is a bare <span> with neither role nor label: its class is the only handle.
    return chat(page).locator(".loading-spinner")


def reasoning_titles(page: Page) -> Locator:
    return chat(page).get_by_role("button", name=TITLE)


def stats_lines(page: Page) -> Locator:
    return chat(page).get_by_text(re.compile(r"⏱ .*tok/s"))


def textbox(page: Page) -> Locator:
    return page.locator("#question textarea")


def base_chat(page: Page) -> Locator:
    return page.locator("#base-chat")


def turn_on_compare(page: Page) -> None:
    switch = page.get_by_role("checkbox", name=COMPARE_LABEL)
    expect(switch).to_be_enabled()
    switch.check()
    expect(base_chat(page)).to_be_visible()
    expect(base_chat(page).get_by_text(BASE_LABEL, exact=True)).to_be_visible()
    expect(chat(page).get_by_text(ADAPTER_LABEL, exact=True)).to_be_visible()


def set_slider(page: Page, label: str, value: str) -> None:
    """A Generation settings slider set through its number box, as a person would type it."""
    settings = page.get_by_role("button", name=re.compile(r"^Generation settings"))
    settings.click()
    box = page.get_by_label(f"number input for {label}")
    slider = page.get_by_role("slider", name=re.compile(re.escape(label)))
    for _ in range(3):  # on a loaded machine a first entry made while the page settles can be lost
        box.fill(value)
        box.press("Enter")
        with contextlib.suppress(AssertionError):
            expect(slider).to_have_value(value, timeout=5000)
            break
    expect(slider).to_have_value(value)
    settings.click()


def download(page: Page, button: str, folder: Path) -> Path:
    with page.expect_download() as started:
        page.locator(button).click()
    saved = folder / started.value.suggested_filename
    started.value.save_as(saved)
    return saved


def snap(page: Page, name: str, full_page: bool = False) -> None:
    """A screenshot as a person would see it once Gradio's slide-in transitions have finished."""
    page.screenshot(path=screenshot_path(name), animations="disabled", full_page=full_page)


def set_greedy(page: Page) -> None:
    """Temperature 0 through the Generation settings accordion, so the tiny adapter answers as trained."""
    set_slider(page, "Temperature (0 = greedy)", "0")


def ask(page: Page, question: str) -> None:
    textbox(page).fill(question)
    textbox(page).press("Enter")
    expect(chat(page).get_by_test_id("user").filter(has_text=question)).to_be_visible()


def shown_reasoning(page: Page, index: int = 0) -> str:
    """The reasoning text a person sees in the index-th accordion (expanded), without its title line."""
    bubble = chat(page).get_by_test_id("bot").filter(has=page.get_by_role("button", name=TITLE)).nth(index)
    text = bubble.inner_text()
    title = bubble.get_by_role("button", name=TITLE).inner_text()
    return text.replace(title, "", 1).strip()


# -------------------------------------------------------------------------------------------------------- tests


def test_notice_and_model_status_are_visible(page: Page, engine: Engine) -> None:
    notice = page.locator("#disclaimer")
    expect(notice).to_contain_text(DISCLAIMER)
    expect(page.get_by_text("not for clinical use").first).to_be_visible()
    status = page.locator("#model-status")
    expect(status).to_be_visible()
    expect(status).to_contain_text("Model:")
    expect(status).to_contain_text(engine.status().replace("`", ""))
    expect(page.get_by_role("button", name="Generation settings")).to_have_count(1)  # one settings accordion
    snap(page, "01-page-loaded", full_page=True)


def test_reasoning_streams_in_a_spinner_accordion_then_collapses_with_its_duration(
    page: Page, slow: SlowStream
) -> None:
    set_greedy(page)
    slow.reset(free_events=4)
    slow.gate.clear()  # hold the stream after a few reasoning tokens
    ask(page, QUESTIONS[0])

    # Streaming: one accordion titled Reasoning, spinner on, open, showing the reasoning so far.
    expect(reasoning_titles(page)).to_have_count(1)
    expect(spinners(page)).to_have_count(1)
    expect(spinners(page)).to_be_visible()
    assert slow.wait_for(lambda: slow.served >= 4)
    partial = slow.reasoning_served.strip()  # the stream is held here: the page catches up with it
    assert partial and ADAPTER_REASONING.startswith(partial) and partial != ADAPTER_REASONING
    expect(chat(page).get_by_text(partial, exact=True)).to_be_in_viewport()  # on screen, not just in the DOM
    assert shown_reasoning(page) == partial
    expect(page.get_by_test_id("stop-button")).to_be_visible()
    expect(textbox(page)).to_be_disabled()
    snap(page, "02-reasoning-pending-spinner")

    slow.gate.set()
    # Done: stats line under the answer, spinner gone, accordion collapsed with "(N.Ns)" in its title.
    expect(stats_lines(page)).to_have_count(1)
    expect(spinners(page)).to_have_count(0)
    expect(reasoning_titles(page)).to_have_accessible_name(DURATION)
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
    expect(chat(page).get_by_text(ADAPTER_REASONING)).to_be_hidden()
    expect(textbox(page)).to_be_editable()
    assert [p.temperature for p in slow.params] == [0.0]  # the page's slider reached the server
    snap(page, "03-reasoning-done-collapsed")

    # A click opens it: the whole reasoning, and the answer still below it.
    reasoning_titles(page).click()
    expect(chat(page).get_by_text(ADAPTER_REASONING, exact=True)).to_be_in_viewport()
    assert shown_reasoning(page) == ADAPTER_REASONING
    snap(page, "04-reasoning-expanded")
    reasoning_titles(page).click()
    expect(chat(page).get_by_text(ADAPTER_REASONING)).to_be_hidden()


def test_stop_mid_stream_ends_generation_and_leaves_no_spinner(page: Page, slow: SlowStream) -> None:
    set_greedy(page)
    slow.reset(free_events=4)
    slow.gate.clear()
    ask(page, QUESTIONS[1])
    expect(spinners(page)).to_have_count(1)
    assert slow.wait_for(lambda: slow.served >= 4)
    partial = slow.reasoning_served.strip()  # the stream is held here: the page catches up with it
    expect(chat(page).get_by_text(partial, exact=True)).to_be_visible()
    served_at_stop = slow.served

    page.get_by_test_id("stop-button").click()
    expect(spinners(page)).to_have_count(0)
    expect(reasoning_titles(page)).to_have_accessible_name(re.compile(r"^\s*Reasoning\s*stopped\s*$"))
    assert slow.wait_for(slow.cancels[0].is_set), "Stop never reached the request's cancel event"
    slow.gate.set()  # a stream that was not stopped would now run to its end
    page.wait_for_timeout(500)
    assert slow.served == served_at_stop
    expect(textbox(page)).to_be_editable()
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    expect(stats_lines(page)).to_have_count(1)  # the stopped answer's stats, with its notice (issue 14)
    reasoning_titles(page).click()
    expect(chat(page).get_by_text(ADAPTER_REASONING)).to_have_count(0)  # the rest of the reasoning never came
    assert shown_reasoning(page) == partial
    expect(chat(page).get_by_text(partial, exact=True)).to_be_in_viewport()
    snap(page, "05-stopped-mid-reasoning")

    ask(page, QUESTIONS[2])  # the next question is served normally
    expect(stats_lines(page)).to_have_count(1)
    expect(spinners(page)).to_have_count(0)
    expect(reasoning_titles(page)).to_have_count(2)
    expect(reasoning_titles(page).nth(1)).to_have_accessible_name(DURATION)
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
    assert slow.questions == [QUESTIONS[1], QUESTIONS[2]]
    assert slow.turns[1] == []  # the stopped question had no answer, so it is not fed back to the model
    snap(page, "06-next-question-after-stop", full_page=True)


def test_clicking_an_example_runs_it(page: Page, slow: SlowStream) -> None:
    set_greedy(page)
    example = page.get_by_role("button", name=re.compile(r"^Select example 4\b"))
    expect(example).to_contain_text(EXAMPLES[3])
    example.click()
    expect(chat(page).get_by_test_id("user").filter(has_text=EXAMPLES[3])).to_be_visible()
    expect(stats_lines(page)).to_have_count(1)
    expect(spinners(page)).to_have_count(0)
    assert slow.questions == [EXAMPLES[3]]
    snap(page, "07-example-answered")


def test_status_line_follows_the_model_loading(chromium: Browser, tiny_settings: Settings) -> None:
    loading = Engine(tiny_settings)  # not loaded yet
    with serve(loading) as url, open_page(chromium, url) as page:
        status = page.locator("#model-status")
        expect(status).to_contain_text("Loading the model")
        snap(page, "08-model-loading")
        threading.Thread(target=loading.load, daemon=True).start()
        expect(status).to_contain_text("Model:")  # the status timer picks up the loaded model
        assert loading.ready, loading.error
        expect(status).to_contain_text(loading.status().replace("`", ""))


def test_stats_line_under_the_answer(page: Page) -> None:
    set_greedy(page)
    ask(page, QUESTIONS[0])
    expect(stats_lines(page)).to_have_count(1)
    expect(stats_lines(page)).to_have_text(STATS)
    expect(stats_lines(page)).to_be_visible()
    expect(chat(page).get_by_text("cut off")).to_have_count(0)


def test_token_limit_cutting_the_reasoning_says_so_and_suggests_raising_it(page: Page) -> None:
    set_greedy(page)
    set_slider(page, "Max new tokens", "10")
    ask(page, QUESTIONS[0])
    notice = chat(page).get_by_text("The reasoning was cut off by the token limit")
    expect(notice).to_be_visible()
    expect(chat(page).get_by_text(re.compile(r"Raise\s+Max new tokens\s+in Generation settings"))).to_be_visible()
    expect(reasoning_titles(page)).to_have_accessible_name(re.compile(r"^\s*Reasoning\s*cut off"))
    expect(stats_lines(page)).to_contain_text("10 tokens (10 reasoning · 0 answer)")
    expect(spinners(page)).to_have_count(0)
    snap(page, "09-reasoning-cut-off-notice")


def test_compare_is_unavailable_without_an_adapter_and_says_why(chromium: Browser, base_only_url: str) -> None:
    with open_page(chromium, base_only_url) as page:
        switch = page.get_by_role("checkbox", name=COMPARE_LABEL)
        expect(switch).to_be_disabled()
        expect(page.locator("#compare-note")).to_contain_text("Not available: No adapter is configured")
        expect(base_chat(page)).to_be_hidden()
        snap(page, "14-compare-unavailable")


def test_compare_streams_the_base_model_beside_the_adapter(page: Page, slow: SlowStream) -> None:
    set_greedy(page)
    turn_on_compare(page)
    slow.reset(free_events=2, gated=frozenset({False}))
    slow.gate.clear()  # the base answer stops after two events: its pending state can be seen
    ask(page, QUESTIONS[0])

    # The adapter answers first; the base column shows the question, then streams its own answer.
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
    expect(base_chat(page).get_by_test_id("user").filter(has_text=QUESTIONS[0])).to_be_visible()
    assert slow.wait_for(lambda: len(slow.served_by) == 2 and slow.served_by[1] == 2)
    expect(base_chat(page).get_by_test_id("bot")).not_to_have_count(0)
    expect(page.get_by_test_id("stop-button")).to_be_visible()  # the request runs until the base answer is done
    expect(textbox(page)).to_be_disabled()
    snap(page, "10-compare-base-streaming")

    slow.gate.set()
    expect(base_chat(page).get_by_text(BASE_OUTPUT, exact=True)).to_be_visible()
    expect(base_chat(page).get_by_text(STATS)).to_have_count(1)
    expect(chat(page).get_by_text(STATS)).to_have_count(1)
    expect(base_chat(page).get_by_role("button", name=TITLE)).to_have_count(0)  # the base writes no <think>
    expect(reasoning_titles(page)).to_have_accessible_name(DURATION)
    expect(page.locator(".loading-spinner")).to_have_count(0)
    expect(textbox(page)).to_be_editable()
    assert slow.questions == [QUESTIONS[0], QUESTIONS[0]] and slow.adapters == [True, False]
    assert slow.turns[0] == slow.turns[1] == []  # the same prompt for both
    assert BASE_OUTPUT != ADAPTER_ANSWER
    snap(page, "11-compare-done", full_page=True)

    # Switched off, the next question is answered by the adapter alone.
    page.get_by_role("checkbox", name=COMPARE_LABEL).uncheck()
    expect(base_chat(page)).to_be_hidden()
    ask(page, QUESTIONS[1])
    expect(chat(page).get_by_text(STATS)).to_have_count(2)
    assert slow.adapters == [True, False, True]


def test_stop_during_the_base_answer_stops_it(page: Page, slow: SlowStream) -> None:
    set_greedy(page)
    turn_on_compare(page)
    slow.reset(free_events=1, gated=frozenset({False}))
    slow.gate.clear()
    ask(page, QUESTIONS[2])
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
    assert slow.wait_for(lambda: len(slow.served_by) == 2 and slow.served_by[1] == 1)  # the base is held at 1 event
    expect(base_chat(page).get_by_test_id("bot")).not_to_have_count(0)
    served_at_stop = slow.served

    page.get_by_test_id("stop-button").click()
    assert slow.wait_for(slow.cancels[1].is_set), "Stop never reached the base request"
    expect(base_chat(page).get_by_text("Stopped.")).to_be_visible()
    expect(page.locator(".loading-spinner")).to_have_count(0)
    slow.gate.set()
    page.wait_for_timeout(500)
    assert slow.served == served_at_stop
    expect(base_chat(page).get_by_text(BASE_OUTPUT, exact=True)).to_have_count(0)
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()  # the finished answer stays
    expect(textbox(page)).to_be_editable()
    snap(page, "12-compare-stopped")

    ask(page, QUESTIONS[0])  # and the next compared question is served normally
    expect(base_chat(page).get_by_text(BASE_OUTPUT, exact=True)).to_be_visible()
    expect(base_chat(page).get_by_text(STATS)).to_have_count(1)


def test_export_downloads_the_conversation_as_markdown_and_json(page: Page, engine: Engine, tmp_path: Path) -> None:
    expect(page.locator("#export-md")).to_be_disabled()  # nothing to export yet
    set_greedy(page)
    turn_on_compare(page)
    ask(page, QUESTIONS[0])
    expect(base_chat(page).get_by_text(STATS)).to_have_count(1)
    expect(page.locator("#export-json")).to_be_enabled()

    document = json.loads(download(page, "#export-json", tmp_path).read_text(encoding="utf-8"))
    assert document["disclaimer"] == DISCLAIMER
    assert document["models"]["adapter"] == engine.loaded.adapter_id
    assert document["models"]["base"] == engine.loaded.base_id
    assert document["generation"]["temperature"] == 0.0
    user, adapter, base = document["messages"]
    assert user == {"role": "user", "content": QUESTIONS[0]}
    assert (adapter["reasoning"], adapter["answer"]) == (ADAPTER_REASONING, ADAPTER_ANSWER)
    assert (base["reasoning"], base["answer"], base["model"]) == (None, BASE_OUTPUT, "base")
    assert "tok/s" in adapter["stats"] and "tok/s" in base["stats"]

    saved = download(page, "#export-md", tmp_path)
    assert saved.name == "medcot-conversation.md"
    markdown = saved.read_text(encoding="utf-8")
    assert DISCLAIMER in markdown and QUESTIONS[0] in markdown
    assert f"> {ADAPTER_REASONING}" in markdown and "**Reasoning**" in markdown
    assert ADAPTER_ANSWER in markdown and BASE_OUTPUT in markdown and f"### {BASE_LABEL}" in markdown
    snap(page, "13-export-ready")


# ------------------------------------------------------------------------- what a newcomer hit (issue 14)


def exported(page: Page, folder: Path) -> dict:
    return json.loads(download(page, "#export-json", folder).read_text(encoding="utf-8"))


def test_export_holds_every_finished_answer_with_compare_off(page: Page, tmp_path: Path) -> None:
    set_greedy(page)
    ask(page, QUESTIONS[0])
    expect(stats_lines(page)).to_have_count(1)
    user, answer = exported(page, tmp_path / "one")["messages"]
    assert user == {"role": "user", "content": QUESTIONS[0]}
    assert (answer["reasoning"], answer["answer"]) == (ADAPTER_REASONING, ADAPTER_ANSWER)
    assert "tok/s" in answer["stats"]

    ask(page, QUESTIONS[1])
    expect(stats_lines(page)).to_have_count(2)
    messages = exported(page, tmp_path / "two")["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[2]["content"] == QUESTIONS[1] and messages[3]["answer"] and messages[3]["reasoning"]


def test_a_stopped_answer_says_so_keeps_its_stats_and_is_exported(
    page: Page, slow: SlowStream, tmp_path: Path
) -> None:
    set_greedy(page)
    slow.reset(free_events=4)
    slow.gate.clear()
    ask(page, QUESTIONS[1])
    assert slow.wait_for(lambda: slow.served >= 4)
    partial = slow.reasoning_served.strip()
    expect(chat(page).get_by_text(partial, exact=True)).to_be_visible()
    page.get_by_test_id("stop-button").click()

    expect(chat(page).get_by_text("Stopped: the answer above is as far as it got.")).to_be_visible()
    expect(stats_lines(page)).to_have_count(1)
    expect(stats_lines(page)).to_contain_text("tokens")
    expect(page.get_by_test_id("stop-button")).to_be_hidden()
    _, answer = exported(page, tmp_path)["messages"]
    assert answer["reasoning"] == partial
    assert any("Stopped" in note for note in answer["notes"]) and "tokens" in answer["stats"]
    snap(page, "14-stopped-with-stats")


def test_an_answer_cut_off_by_the_token_limit_says_so(page: Page, engine: Engine) -> None:
    # Enough tokens for the reasoning and the first of the answer: the answer itself is cut.
    tokenizer = engine.loaded.tokenizer
    reasoning = f"<think>\n{ADAPTER_REASONING}\n</think>\n"
    limit = len(tokenizer.encode(reasoning, add_special_tokens=False)) + 1
    set_greedy(page)
    set_slider(page, "Max new tokens", str(limit))
    ask(page, QUESTIONS[0])
    expect(stats_lines(page)).to_have_count(1)
    expect(chat(page).get_by_text(re.compile(r"Cut off by the token limit \(\d+ tokens\)"))).to_be_visible()
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_have_count(0)


def test_a_question_asked_while_the_model_loads_is_kept_and_answered(
    chromium: Browser, tiny_settings: Settings
) -> None:
    loading = Engine(tiny_settings)  # not loaded yet
    with serve(loading) as url, open_page(chromium, url) as page:
        ask(page, QUESTIONS[0])
        expect(chat(page).get_by_text(re.compile(r"model is (still )?loading", re.IGNORECASE))).to_be_visible()
        expect(page.get_by_text("Error")).to_have_count(0)
        snap(page, "15-asked-while-loading")
        threading.Thread(target=loading.load, daemon=True).start()
        expect(stats_lines(page)).to_have_count(1, timeout=60_000)
        expect(chat(page).get_by_test_id("user").filter(has_text=QUESTIONS[0])).to_have_count(1)
        expect(chat(page).get_by_text(re.compile(r"model is (still )?loading", re.IGNORECASE))).to_have_count(0)
        expect(page.get_by_test_id("stop-button")).to_be_hidden()
        expect(textbox(page)).to_be_editable()


def test_footer_labels_and_export_name_the_base_model_when_it_runs_alone(
    chromium: Browser, base_only_url: str, tmp_path: Path
) -> None:
    with open_page(chromium, base_only_url) as page:
        footer = page.locator("#footer")
        expect(footer).to_contain_text("without the medical adapter")
        expect(footer).not_to_contain_text("a LoRA fine-tune of Gemma 3 270M. ")
        ask(page, QUESTIONS[0])
        expect(stats_lines(page)).to_have_count(1)
        markdown = download(page, "#export-md", tmp_path).read_text(encoding="utf-8")
        assert "Fine-tuned" not in markdown
        assert "without the medical adapter" in markdown


def test_footer_names_the_fine_tune_when_the_adapter_runs(page: Page) -> None:
    expect(page.locator("#footer")).to_contain_text("Medical-Diagnosis-COT-Gemma3-270M")
    expect(page.locator("#footer")).to_contain_text("adapter")


@pytest.fixture(scope="module")
def ends_at_once_url(tiny_settings: Settings) -> Iterator[str]:
    """The tiny base alone, its end-of-turn token biased far above every other: a real model that returns no
    answer at all (a normal token declared an end token would still be shown as text)."""
    alone = Engine(replace(tiny_settings, adapter=None)).load()
    assert alone.ready, alone.error
    eos = alone.loaded.model.generation_config.eos_token_id
    alone.loaded.model.generation_config.sequence_bias = {((eos if isinstance(eos, list) else [eos])[0],): 1000.0}
    with serve(alone) as url:
        yield url


def test_an_empty_answer_says_the_model_returned_none_and_keeps_the_stats(
    chromium: Browser, ends_at_once_url: str, tmp_path: Path
) -> None:
    with open_page(chromium, ends_at_once_url) as page:
        set_greedy(page)
        ask(page, QUESTIONS[0])
        expect(stats_lines(page)).to_have_count(1)
        expect(stats_lines(page)).to_contain_text("tokens")
        expect(chat(page).get_by_text("The model returned no answer")).to_be_visible()
        expect(spinners(page)).to_have_count(0)
        _, answer = exported(page, tmp_path)["messages"]
        assert answer["answer"] == "" and any("no answer" in note for note in answer["notes"])
        snap(page, "16-empty-answer")


def test_a_refused_question_says_why_and_the_next_one_is_answered(page: Page) -> None:
    """Bad input gets a clear message, the conversation stays, and the same page serves the next question."""
    set_greedy(page)
    ask(page, QUESTIONS[0])
    expect(stats_lines(page)).to_have_count(1)
    textbox(page).fill("x" * 9000)  # over the question length limit: refused before the model runs
    textbox(page).press("Enter")
    expect(page.get_by_text(re.compile(r"too long \(9,000 characters"))).to_be_visible()
    snap(page, "30-refused-question")
    expect(textbox(page)).to_be_editable()
    expect(textbox(page)).to_have_value("x" * 9000)  # back in the box, to shorten or send again
    expect(chat(page).get_by_test_id("user")).to_have_count(1)  # the conversation as it was before it
    ask(page, QUESTIONS[1])
    expect(stats_lines(page)).to_have_count(2)
    expect(chat(page).get_by_test_id("user").filter(has_text=QUESTIONS[0])).to_be_visible()
    snap(page, "31-next-question-after-a-refusal")


def test_an_example_that_fails_says_why_and_the_page_can_ask_again(
    chromium: Browser, unreachable_server_url: str
) -> None:
    """An example's click is an event of its own in ChatInterface: its failure puts the page back as a typed
    question's does (before the fix the textbox stayed disabled, a pending reply and the Stop icon stayed)."""
    with open_page(chromium, unreachable_server_url) as page:
        page.get_by_role("button", name=re.compile(r"^Select example 1\b")).click()
        expect(page.get_by_text(re.compile("cannot be reached")).first).to_be_visible()
        expect(textbox(page)).to_be_editable()
        expect(textbox(page)).to_have_value(EXAMPLES[0])  # back in the box, to send again once the server is up
        expect(chat(page).get_by_test_id("user")).to_have_count(0)
        expect(spinners(page)).to_have_count(0)
        expect(page.get_by_test_id("stop-button")).to_be_hidden()
        snap(page, "32-failed-example-page-restored")


# ------------------------------------------------------------- issue 25: the switch, feedback, the upload cap


def copied(page: Page) -> str:
    """What the newest answer's copy button puts on the clipboard."""
    chat(page).get_by_test_id("bot").last.hover()
    chat(page).get_by_role("button", name="Copy message", exact=True).last.click()
    return page.evaluate("navigator.clipboard.readText()")


def test_show_reasoning_off_hides_the_accordion_from_the_next_answer_and_is_remembered(
    page: Page, tmp_path: Path
) -> None:
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    switch = page.get_by_role("checkbox", name=SHOW_REASONING_LABEL)
    expect(switch).to_be_checked()  # on by default
    set_greedy(page)
    ask(page, QUESTIONS[0])
    expect(stats_lines(page)).to_have_count(1)
    expect(reasoning_titles(page)).to_have_count(1)

    switch.uncheck()
    ask(page, QUESTIONS[1])
    expect(stats_lines(page)).to_have_count(2)
    expect(reasoning_titles(page)).to_have_count(1)  # the earlier answer keeps its accordion; the new one has none
    chat(page).get_by_role("button", name="Clear", exact=True).click()
    expect(stats_lines(page)).to_have_count(0)
    ask(page, QUESTIONS[0])  # a new conversation: the prompt the tiny adapter was trained on, so it reasons
    expect(stats_lines(page)).to_have_count(1)
    expect(chat(page).get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
    expect(reasoning_titles(page)).to_have_count(0)
    snap(page, "40-show-reasoning-off", full_page=True)
    (answer,) = [m for m in exported(page, tmp_path)["messages"] if m["role"] == "assistant"]
    assert (answer["reasoning"], answer["answer"]) == (ADAPTER_REASONING, ADAPTER_ANSWER)  # the export keeps it
    text = copied(page)
    assert ADAPTER_ANSWER in text and text.rstrip().endswith(DISCLAIMER) and ADAPTER_REASONING not in text

    page.reload()
    expect(page.get_by_role("checkbox", name=SHOW_REASONING_LABEL)).not_to_be_checked()  # remembered
    set_greedy(page)
    ask(page, QUESTIONS[2])
    expect(stats_lines(page)).to_have_count(1)
    expect(reasoning_titles(page)).to_have_count(0)
    page.get_by_role("checkbox", name=SHOW_REASONING_LABEL).check()  # and back on for the next visitor's tests


@pytest.fixture(scope="module")
def feedback_app(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The app with feedback on (MEDCOT_FEEDBACK_DIR), on the same loaded model."""
    folder = tmp_path_factory.mktemp("feedback")
    with serve(Engine(replace(engine.settings, feedback_dir=folder), engine.loaded)) as url:
        yield url, folder


def test_a_like_click_writes_the_exact_record_and_a_comment_follows(
    chromium: Browser, feedback_app: tuple[str, Path], engine: Engine, tmp_path: Path
) -> None:
    url, folder = feedback_app

    def written() -> list[dict]:
        return [json.loads(line) for path in folder.glob("*.jsonl") for line in path.read_text().splitlines()]

    with open_page(chromium, url) as page:
        expect(page.locator("#feedback-note")).to_contain_text("nothing that identifies you")
        set_greedy(page)
        ask(page, QUESTIONS[0])
        expect(stats_lines(page)).to_have_count(1)
        chat(page).get_by_test_id("bot").last.hover()
        chat(page).get_by_role("button", name="Like", exact=True).last.click()
        assert SlowStream.wait_for(lambda: len(written()) == 1)
        record = written()[0]
        greedy = {"max_new_tokens": 64, "temperature": 0.0, "top_p": 0.95, "top_k": 64, "repetition_penalty": 1.0}
        assert {k: v for k, v in record.items() if k not in ("feedback_id", "time")} == expected_feedback(
            engine, "like", greedy
        )
        comment = page.locator("#feedback-comment textarea")
        expect(comment).to_be_visible()
        snap(page, "41-feedback-comment", full_page=True)
        comment.fill("Clear, but cite a guideline.")
        comment.press("Enter")
        assert SlowStream.wait_for(lambda: len(written()) == 2)
        assert written()[1]["comment"] == "Clear, but cite a guideline."
        assert written()[1]["feedback_id"] == record["feedback_id"]
        expect(comment).to_be_hidden()

        # A large upload is refused; the page, its export and the API keep working.
        big = page.request.post(
            f"{url.rstrip('/')}/gradio_api/upload",
            multipart={"files": {"name": "big.bin", "mimeType": "application/octet-stream", "buffer": b"x" * 2**21}},
        )
        assert big.status == 413
        ask(page, QUESTIONS[1])
        expect(stats_lines(page)).to_have_count(2)
        assert [m["role"] for m in exported(page, tmp_path)["messages"]] == ["user", "assistant"] * 2
