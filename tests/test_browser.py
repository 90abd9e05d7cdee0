"""The app in a real browser (issue 3): reasoning accordion while streaming, collapsed with its duration when done,
expandable; Stop mid-stream; the clinical-use notice, the model status line and the examples.

The app is served in-process over the tiny real Gemma 3 (tests/tiny.py); its stream is slowed (and, for Stop,
frozen at a known point) by tests/browser.SlowStream so the pending state can be seen. Screenshots are kept
under artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator

import pytest
from browser import CHROMIUM, CHROMIUM_ARGS, SlowStream, screenshot_path
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright
from serving import serve
from tiny import ADAPTER_ANSWER, ADAPTER_REASONING, QUESTIONS

from medcot import DISCLAIMER
from medcot.config import Settings
from medcot.engine import Engine
from medcot.ui import EXAMPLES

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)

TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)
# The thought accordion's header is a div with role=button whose name is its title, then "stopped"/"(1.2s)".
TITLE = re.compile(r"^\s*Reasoning\b")
DURATION = re.compile(r"^\s*Reasoning\s*\(\d+(\.\d+)?m?s\)\s*$")


@pytest.fixture(scope="module")
def slow(engine: Engine) -> SlowStream:
    return SlowStream(engine)


@pytest.fixture(scope="module")
def app_url(engine: Engine, slow: SlowStream) -> Iterator[str]:
    with serve(engine, slow) as url:
        yield url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_page(chromium: Browser, url: str) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1000, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(url)
        expect(page.locator("#disclaimer")).to_be_visible()
        yield page
    finally:
        context.close()


@pytest.fixture
def page(chromium: Browser, app_url: str, slow: SlowStream) -> Iterator[Page]:
    slow.reset()
    with open_page(chromium, app_url) as opened:
        yield opened
    slow.reset()  # never leave a frozen stream behind


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


def snap(page: Page, name: str, full_page: bool = False) -> None:
    """A screenshot as a person would see it once Gradio's slide-in transitions have finished."""
    page.screenshot(path=screenshot_path(name), animations="disabled", full_page=full_page)


def set_greedy(page: Page) -> None:
    """Temperature 0 through the Generation settings accordion, so the tiny adapter answers as trained."""
    settings = page.get_by_role("button", name=re.compile(r"^Generation settings"))
    settings.click()
    temperature = page.get_by_label("number input for Temperature (0 = greedy)")
    temperature.fill("0")
    temperature.press("Enter")
    expect(page.get_by_role("slider", name=re.compile("Temperature"))).to_have_value("0")
    settings.click()


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
    expect(chat(page).get_by_test_id("bot").first).to_contain_text(re.compile(r"Reasoning\s*\S"))
    partial = shown_reasoning(page)
    assert partial and ADAPTER_REASONING.startswith(partial) and partial != ADAPTER_REASONING
    expect(chat(page).get_by_text(partial, exact=True)).to_be_in_viewport()  # on screen, not just in the DOM
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
    expect(chat(page).get_by_test_id("bot").first).to_contain_text(re.compile(r"Reasoning\s*\S"))
    partial = shown_reasoning(page)
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
    expect(stats_lines(page)).to_have_count(0)
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
