"""Deep links and embedding (issue 7) in a real browser: ``?q=`` pre-fills the question, ``&run=1`` asks it (and
``&compare=1`` turns the base-model comparison on), a bad linked question is refused without harm, and the app works
inside another site's page, as an iframe and as Gradio's ``<gradio-app>`` web component.

The host page is a static file served from another port (another origin), as a model card or blog would embed the
Space. Screenshots are kept under artifacts/screenshots/.
"""

from __future__ import annotations

import contextlib
import functools
import html
import http.server
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx
import pytest
from playwright.sync_api import Browser, FrameLocator, Locator, Page, expect

from medcot.request import MAX_QUESTION_CHARS
from medcot.ui.compare import COMPARE_LABEL
from tests.helpers.browser import CHROMIUM, SlowStream, screenshot_path
from tests.helpers.serving import free_port
from tests.helpers.tiny import ADAPTER_ANSWER, BASE_OUTPUT, QUESTIONS

pytestmark = pytest.mark.browser

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed", allow_module_level=True)

TIMEOUT_MS = 20_000
expect.set_options(timeout=TIMEOUT_MS)
STATS = re.compile(r"⏱ first token \d+\.\d\d s · \d+\.\d tok/s")


@pytest.fixture
def page(chromium: Browser, slow: SlowStream) -> Iterator[Page]:
    # Links cannot set the temperature: the tiny models answer as trained only when greedy.
    slow.reset(overrides={"temperature": 0.0})
    context = chromium.new_context(viewport={"width": 1100, "height": 950})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()
        slow.reset()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # silence the request log
        pass


@contextlib.contextmanager
def static_site(folder: Path, body: str) -> Iterator[str]:
    """A host page on its own port (another origin than the app), served from a thread; its URL."""
    (folder / "index.html").write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>Host page</title></head><body>{body}</body></html>',
        encoding="utf-8",
    )
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def link(app_url: str, **query: str) -> str:
    return f"{app_url.rstrip('/')}/?{urlencode(query, quote_via=quote)}"


def question_box(root: Page | FrameLocator) -> Locator:
    return root.locator("#question textarea")


def snap(page: Page, name: str) -> None:
    page.screenshot(path=screenshot_path(name), animations="disabled", full_page=True)


# -------------------------------------------------------------------------------------------------------- tests


def test_q_prefills_the_question_without_asking_it(page: Page, app_url: str, slow: SlowStream) -> None:
    page.goto(link(app_url, q=QUESTIONS[1]))
    expect(question_box(page)).to_have_value(QUESTIONS[1])
    expect(question_box(page)).to_be_editable()
    page.wait_for_timeout(1000)
    assert slow.questions == []
    expect(page.locator("#chat").get_by_test_id("user")).to_have_count(0)
    expect(page.get_by_role("checkbox", name=COMPARE_LABEL)).not_to_be_checked()
    snap(page, "20-deep-link-prefilled")


def test_run_asks_the_linked_question_and_compare_adds_the_base_model(
    page: Page, app_url: str, slow: SlowStream
) -> None:
    page.goto(link(app_url, q=QUESTIONS[0], run="1", compare="1"))
    expect(page.get_by_role("checkbox", name=COMPARE_LABEL)).to_be_checked()
    chat, base = page.locator("#chat"), page.locator("#base-chat")
    expect(chat.get_by_test_id("user").filter(has_text=QUESTIONS[0])).to_be_visible()
    expect(chat.get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
    expect(base.get_by_text(BASE_OUTPUT, exact=True)).to_be_visible()
    expect(base.get_by_text(STATS)).to_have_count(1)
    expect(question_box(page)).to_be_editable()
    assert slow.questions == [QUESTIONS[0], QUESTIONS[0]] and slow.adapters == [True, False]
    page.reload()  # a reload runs the link again: one new question, not a repeat of the old conversation
    expect(base.get_by_text(BASE_OUTPUT, exact=True)).to_be_visible()
    expect(chat.get_by_test_id("user")).to_have_count(1)
    snap(page, "21-deep-link-run-compare")


@pytest.mark.parametrize(
    ("question", "warning"),
    [("\x00\x01  ", None), ("x" * (MAX_QUESTION_CHARS + 1), "too long")],
    ids=["control characters only", "too long"],
)
def test_a_bad_linked_question_is_neither_filled_in_nor_asked(
    page: Page, app_url: str, slow: SlowStream, question: str, warning: str | None
) -> None:
    page.goto(link(app_url, q=question, run="1"))
    expect(page.locator("#disclaimer")).to_be_visible()
    if warning:
        expect(page.get_by_text(re.compile(f"question in the link was not used.*{warning}"))).to_be_visible()
    page.wait_for_timeout(1000)
    expect(question_box(page)).to_have_value("")
    assert slow.questions == []
    question_box(page).fill(QUESTIONS[2])  # the page works as usual
    question_box(page).press("Enter")
    expect(page.locator("#chat").get_by_text(STATS)).to_have_count(1)


def test_the_app_works_inside_an_iframe_of_another_site(
    page: Page, app_url: str, slow: SlowStream, tmp_path: Path
) -> None:
    src = html.escape(link(app_url, q=QUESTIONS[0]), quote=True)
    body = (
        "<h1>A page about the model</h1>"
        f'<iframe id="medcot" src="{src}" width="100%" height="820" frameborder="0" title="MedCoT Space"></iframe>'
    )
    with static_site(tmp_path, body) as host:
        assert host.split("/")[2] != app_url.split("/")[2]  # another origin
        page.goto(host)
        frame = page.frame_locator("#medcot")
        expect(frame.locator("#disclaimer")).to_be_visible()
        expect(question_box(frame)).to_have_value(QUESTIONS[0])  # ?q= works inside the frame too
        question_box(frame).press("Enter")
        expect(frame.locator("#chat").get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
        expect(frame.locator("#chat").get_by_text(STATS)).to_have_count(1)
        frame.get_by_role("checkbox", name=COMPARE_LABEL).check()
        question_box(frame).fill(QUESTIONS[1])
        question_box(frame).press("Enter")
        expect(frame.locator("#base-chat").get_by_text(BASE_OUTPUT, exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="A page about the model")).to_be_visible()
        snap(page, "22-embedded-iframe")
    assert slow.adapters == [True, True, False]


def test_the_app_works_as_a_gradio_app_web_component(
    page: Page, app_url: str, slow: SlowStream, tmp_path: Path
) -> None:
    """`<gradio-app>`, the README's other snippet. Gradio's CDN script (which this machine cannot reach) only
    imports the app's frontend bundle, which defines the element: here that bundle comes from the app itself."""
    app = app_url.rstrip("/")
    bundle = re.search(r'src="\./(assets/index-[\w-]+\.js)"', httpx.get(app_url, timeout=30).text)
    assert bundle, "the app's page names no frontend bundle"
    body = (
        "<h1>Embedded as a web component</h1>"
        f'<script type="module" src="{html.escape(app)}/{bundle.group(1)}"></script>'
        f'<gradio-app src="{html.escape(app)}"></gradio-app>'
    )
    with static_site(tmp_path, body) as host:
        page.goto(host)
        expect(page.locator("gradio-app #disclaimer")).to_be_visible()
        box = page.locator("gradio-app #question textarea")
        box.fill(QUESTIONS[2])
        box.press("Enter")
        expect(page.locator("gradio-app #chat").get_by_text(ADAPTER_ANSWER, exact=True)).to_be_visible()
        expect(page.locator("gradio-app #chat").get_by_text(STATS)).to_have_count(1)
        snap(page, "23-embedded-web-component")
    assert slow.questions == [QUESTIONS[2]]
