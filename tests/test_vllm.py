"""Server mode against a real vLLM (no mock): the tiny base and its LoRA served by vLLM, the app in front of it.

vLLM runs from its own venv (tests/vllm_server.py); without it these tests skip, saying where it was looked for.
One server serves the whole module (it takes 25-100 s to start on 2 cores); the crash test kills and restarts it.
Stop is checked on the server (vLLM's log and metrics) through gradio_client's cancel on /chat and /ask, and through
the page in a real chromium (the Stop button, a closed tab), with the page's streaming and errors in server mode.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from gradio_client import Client
from gradio_client.client import Job
from peft import LoraConfig, get_peft_model
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from transformers import AutoModelForCausalLM, AutoTokenizer

from medcot.answer_stream import Answer
from medcot.backends.server import ServerSettings
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.prompt import SYSTEM_PROMPT, USER_TEMPLATE
from medcot.request import Query
from medcot.ui.stats_line import STOPPED_NOTICE
from tests.helpers.browser import CHROMIUM, open_page, screenshot_path
from tests.helpers.serving import free_port, launched
from tests.helpers.tiny import QUESTIONS, TinyRepos
from tests.helpers.vllm_server import VllmServer, vllm_missing

MISSING = vllm_missing()
START_S = 420  # one vLLM start on a busy 2-core machine, with margin
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(MISSING is not None, reason=MISSING or ""),
    pytest.mark.timeout(2 * START_S + 180),  # the first test starts the server; the crash test restarts it
]

BASE_NAME = "tiny-base"  # the base's served name (--served-model-name)
RAMBLER = "ramble"  # a second LoRA that never stops, for Stop and the crash
MAX_MODEL_LEN = 8192  # the tiny config's positions: room for the longest answer the app allows
GREEDY = GenerationParams(max_new_tokens=64, temperature=0.0)
LONG = 4096  # new tokens the rambler may make (the app's most): ~1 s on quiet cores, 12 s throttled to 10 %
# From a client's cancel to vLLM's abort: ~0.1 s on a quiet machine; on a shared one the app, starved of CPU, took up
# to 20 s (a separate idle process stalled 9-17 s at the same time).
ABORT_WAIT_S = 60
# Rounds a stop test may take to see its aborts: a round where the request ended before the stop (it happened in 2
# to 7 of 8 /chat rounds on quiet cores in the merged suite) is not counted; 16 rounds of ~18 s fit the timeout.
STOP_ATTEMPTS = 16
# The rambler's text: it repeats itself ("and then and then", greedy from the app's prompt "di di di"), so a word or
# two three times over is its text, never the page's labels.
RAMBLING = re.compile(r"\b(\w+(?: \w+)?) \1 \1\b")
VLLM_NICENESS = 10


def build_rambler(repos: TinyRepos, folder: Path) -> Path:
    """A LoRA over the tiny base that answers "and then and then …" and never ends its turn."""
    tokenizer = AutoTokenizer.from_pretrained(repos.base)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(repos.base, dtype=torch.float32),
        LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"),
    )
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    target = tokenizer("and then " * 24, add_special_tokens=False)["input_ids"]  # no <end_of_turn>: it never ends
    model.train()
    for step in range(30):
        question = USER_TEMPLATE.format(question=QUESTIONS[step % len(QUESTIONS)])
        prompt = tokenizer.apply_chat_template(
            [*messages, {"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + target])
        labels = ids.clone()
        labels[:, : len(prompt_ids)] = -100
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def vllm(tiny_repos: TinyRepos, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    folder = tmp_path_factory.mktemp("vllm")
    rambler = build_rambler(tiny_repos, folder / "rambler")
    server = VllmServer(
        tiny_repos.base,
        free_port(),
        folder / "vllm.log",
        lora_modules={"medcot": tiny_repos.adapter, RAMBLER: rambler},
        max_lora_rank=16,
        max_model_len=MAX_MODEL_LEN,
        served_name=BASE_NAME,
        niceness=VLLM_NICENESS,
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def server_settings(repos: TinyRepos, server: VllmServer, model: str = "medcot", **changes: Any) -> Settings:
    """Server mode for the tiny models: the tokenizer from the adapter/base folders, no weights loaded here.

    The app's own prompt budget is set above the server's context so that the server's refusal is what shows.
    """
    settings = Settings(
        base_model=str(repos.base),
        adapter=str(repos.adapter),
        max_new_tokens=64,
        max_input_tokens=2 * MAX_MODEL_LEN,
        backend=ServerSettings(server.url, model),
    )
    return replace(settings, **changes)


@pytest.fixture(scope="module")
def server_engine(tiny_repos: TinyRepos, vllm: VllmServer) -> Engine:
    engine = Engine(server_settings(tiny_repos, vllm)).load()
    assert engine.ready, engine.error
    return engine


@pytest.fixture(scope="module")
def app_url(server_engine: Engine) -> Iterator[str]:
    with launched(server_engine) as (url, _):
        yield url


@contextlib.contextmanager
def client_of(url: str) -> Iterator[Client]:
    client = Client(url, verbose=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def app(app_url: str) -> Iterator[Client]:
    with client_of(app_url) as client:
        yield client


def chat(client: Client, question: str, max_new_tokens: int = 64) -> tuple[str, str]:
    """/chat in a fresh conversation, greedy: (reasoning, answer) as the messages carry them."""
    client.reset_session()
    messages = client.predict(question, max_new_tokens, 0.0, api_name="/chat")
    reasoning = "".join(m["content"] for m in messages if (m.get("metadata") or {}).get("title"))
    answer = "".join(
        m["content"]
        for m in messages
        if not (m.get("metadata") or {}).get("title") and not m["content"].startswith("<sub>")
    )
    return reasoning.strip(), answer.strip()


def test_no_weights_load_and_the_status_names_the_server_and_models(server_engine: Engine, vllm: VllmServer) -> None:
    assert server_engine.ready and server_engine.loaded is None  # the server holds the weights
    status = server_engine.status()
    assert vllm.url in status and "`medcot`" in status and f"`{BASE_NAME}`" in status
    assert server_engine.can_compare  # the base, read from /v1/models as the adapter's parent


def test_chat_and_ask_give_the_local_paths_greedy_answers(app: Client, engine: Engine) -> None:
    for question in QUESTIONS[:2]:
        local = engine.ask(Query(question, params=GREEDY))
        assert local.reasoning and local.answer  # the adapter's format: something to compare
        assert chat(app, question) == (local.reasoning, local.answer)
        asked = app.predict(question, 64, 0.0, api_name="/ask")
        assert asked == local.answer
        full = app.predict(question, 64, 0.0, 0.95, 64, 1.0, True, api_name="/ask")
        assert full == f"Reasoning:\n{local.reasoning}\n\nAnswer:\n{local.answer}"


def test_stats_come_from_the_stream(server_engine: Engine, engine: Engine) -> None:
    served, local = (
        server_engine.ask(Query(QUESTIONS[0], params=GREEDY)),
        engine.ask(Query(QUESTIONS[0], params=GREEDY)),
    )
    assert served.stats is not None and local.stats is not None
    assert served.stats.prompt_tokens == local.stats.prompt_tokens
    assert served.stats.new_tokens == local.stats.new_tokens  # vLLM's token ids and usage count what transformers did
    # Where </think> fell: token-exact from the server's one-token chunks (the local streamer's chunks are words).
    assert 0 < served.stats.reasoning_tokens < served.stats.new_tokens
    assert served.stats.time_to_first_token is not None and served.stats.tokens_per_second > 0


def both(server_engine: Engine) -> tuple[Answer, Answer, list[tuple[float, float]]]:
    """An adapter and a base request sent at the same moment; their answers and (start, end) times."""
    start = threading.Barrier(2)
    spans: list[tuple[float, float]] = []

    def one(use_adapter: bool) -> Answer:
        start.wait(30)
        began = time.monotonic()
        answer = server_engine.ask(Query(QUESTIONS[0], params=GREEDY, use_adapter=use_adapter))
        spans.append((began, time.monotonic()))
        return answer

    with ThreadPoolExecutor(2) as pool:
        adapter, base = pool.map(one, (True, False))
    return adapter, base, spans


def test_base_and_adapter_differ_and_run_at_once_both_right(server_engine: Engine, engine: Engine) -> None:
    local_adapter = engine.ask(Query(QUESTIONS[0], params=GREEDY))
    local_base = engine.ask(Query(QUESTIONS[0], params=GREEDY, use_adapter=False))
    assert (local_base.reasoning, local_base.answer) != (local_adapter.reasoning, local_adapter.answer)
    for _ in range(3):  # batched together on the server: with vLLM's default --max-loras this mix went wrong
        adapter, base, spans = both(server_engine)
        assert (adapter.reasoning, adapter.answer) == (local_adapter.reasoning, local_adapter.answer)
        assert (base.reasoning, base.answer) == (local_base.reasoning, local_base.answer)
        assert max(s for s, _ in spans) < min(e for _, e in spans)  # they overlapped: no switch serialises them


@pytest.fixture(scope="module")
def rambling_url(tiny_repos: TinyRepos, vllm: VllmServer) -> Iterator[str]:
    engine = Engine(server_settings(tiny_repos, vllm, model=RAMBLER, max_new_tokens=LONG)).load()
    assert engine.ready, engine.error
    with launched(engine) as (url, _):
        yield url


@pytest.fixture(scope="module")
def rambling_app(rambling_url: str) -> Iterator[Client]:
    with client_of(rambling_url) as client:
        yield client


def wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return bool(condition())  # type: ignore[operator]  # once more: a stall of this VM can outlast the deadline


def logged(server: VllmServer, what: str) -> int:
    """How often vLLM's log says ``what`` ("Added request", "Aborted request"): its metrics' gauges lag seconds."""
    return server.log_text().count(what)


def finished(server: VllmServer) -> float:
    """Requests vLLM finished, for any reason: "length" at the token limit, "stop" where a sampled rambler ended its
    turn (the page samples at the card's defaults unless set to greedy). Aborted ones are not counted here."""
    return server.counter("vllm:request_success_total")


def settled_counter(server: VllmServer, name: str, timeout: float = 30) -> float:
    """A counter once it stopped moving (read 2 s apart), as vLLM's metrics catch up."""
    value, deadline = server.counter(name), time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(2)
        value, previous = server.counter(name), value
        if value == previous:
            break
    return value


def wait_into_answer(vllm: VllmServer, added: int, tokens_before: float) -> None:
    """Until vLLM has taken a request and made 32 of its tokens: enough for a page to show the rambler (RAMBLING)."""
    assert wait_for(lambda: logged(vllm, "Added request") > added, 60), "the request never reached vLLM"
    made = wait_for(lambda: vllm.counter("vllm:generation_tokens_total") >= tokens_before + 32, 60)
    assert made, "vLLM made fewer than 32 tokens"


def test_server_killed_mid_stream_is_readable_and_served_after_restart(
    rambling_app: Client, app: Client, server_engine: Engine, vllm: VllmServer
) -> None:
    # Killed with vLLM frozen mid-answer (Throttle): a round whose answer ended before the freeze cannot show the
    # crash (an answer vLLM finished rightly ends without an error), and is retried.
    for _ in range(5):
        rambling_app.reset_session()
        added, done = logged(vllm, "Added request"), finished(vllm)
        tokens_before = settled_counter(vllm, "vllm:generation_tokens_total")
        with vllm.throttled() as throttle:
            job = rambling_app.submit(QUESTIONS[0], LONG, 0.0, api_name="/ask")
            wait_into_answer(vllm, added, tokens_before)
            throttle.freeze()
            time.sleep(0.5)  # vLLM's API server takes in the engine's last outputs
            if finished(vllm) == done:
                vllm.stop(hard=True)  # SIGKILL, as a crash or an OOM kill would
                break
        job.result(timeout=60)
    else:
        pytest.fail("in 5 rounds the answer ended before the server could be killed")
    try:
        try:
            outcome = job.result(timeout=60)
        except Exception as exc:
            assert "model server" in str(exc), exc
            assert re.search(r"broke mid-answer|before the answer was complete|failed mid-answer", str(exc)), exc
        else:
            pytest.fail(f"the answer ended without an error when the server was killed: {str(outcome)[:300]!r}")
        # While it is down: a readable refusal, and the status line says why.
        with pytest.raises(Exception, match="cannot be reached"):
            app.predict(QUESTIONS[0], 64, 0.0, api_name="/ask")
        time.sleep(server_engine_models_ttl())
        assert "cannot be reached" in server_engine.status()
    finally:
        vllm.start()  # also when a check failed: the module's other tests need the server
    local_answer = server_engine.ask(Query(QUESTIONS[0], params=GREEDY)).answer
    assert app.predict(QUESTIONS[0], 64, 0.0, api_name="/ask") == local_answer
    time.sleep(server_engine_models_ttl())
    assert "cannot be reached" not in server_engine.status()


def stopped_on_server(
    vllm: VllmServer, start: Callable[[], object], stop: Callable[[], object], freeze: bool = True
) -> bool:
    """Start a rambling request on a throttled vLLM, stop it into its answer with vLLM frozen (VllmServer.throttled):
    True when vLLM aborted it (its log) short of the token limit (its metrics); False when it ended first (at the
    limit or its turn's end) before it was frozen. Frozen, the answer cannot end while the stop travels: on this
    shared 2-core VM the app, starved of CPU, has taken 20 s to pass a Stop on. Without ``freeze`` it streams on,
    throttled: what a stop that acts on the next token needs.
    """
    added, aborted = logged(vllm, "Added request"), logged(vllm, "Aborted request")
    done = finished(vllm)
    tokens_before = settled_counter(vllm, "vllm:generation_tokens_total")
    with vllm.throttled() as throttle:
        start()
        wait_into_answer(vllm, added, tokens_before)
        if freeze:
            throttle.freeze()
        stop()
        ended = wait_for(lambda: logged(vllm, "Aborted request") > aborted or finished(vllm) > done, ABORT_WAIT_S)
    assert ended, vllm.log_text()[-3000:]
    if logged(vllm, "Aborted request") == aborted:
        return False
    generated = settled_counter(vllm, "vllm:generation_tokens_total") - tokens_before
    assert 0 < generated < LONG - 1, generated  # at least the 32 that wait_into_answer saw made
    return True


def stops_abort(
    vllm: VllmServer, start: Callable[[], object], stop: Callable[[], object], needed: int = 3, freeze: bool = True
) -> None:
    """``needed`` stops that vLLM aborted; rounds where the request ended first (a starved machine) do not count."""
    outcomes: list[bool] = []
    while outcomes.count(True) < needed and len(outcomes) < STOP_ATTEMPTS:
        outcomes.append(stopped_on_server(vllm, start, stop, freeze))
    assert outcomes.count(True) == needed, f"aborted in {outcomes.count(True)} of {len(outcomes)} rounds"


@pytest.mark.parametrize("api", ["/chat", "/ask"])
def test_a_clients_cancel_aborts_the_request_on_the_server(api: str, rambling_app: Client, vllm: VllmServer) -> None:
    # gradio_client's job.cancel() posts Gradio's /cancel, as the page's Stop button does; Gradio cancels the
    # handler's task, the app closes the HTTP stream, and vLLM aborts the request (its log and metrics say so).
    jobs: list[Job] = []

    def start() -> None:
        rambling_app.reset_session()
        jobs.append(rambling_app.submit(QUESTIONS[0], LONG, 0.0, api_name=api))

    def cancel() -> None:
        # gradio_client posts /cancel with httpx's 5 s timeout, and Gradio answers once the handler's task has ended:
        # on a starved machine that took longer, the server still acting on it.
        with contextlib.suppress(httpx.TimeoutException):
            jobs[-1].cancel()

    stops_abort(vllm, start, cancel)


def server_engine_models_ttl() -> float:
    from medcot.backends.server import ServerBackend

    return ServerBackend.MODELS_TTL_S + 0.5


def test_prompt_over_the_servers_context_is_readable_and_the_next_is_served(app: Client, engine: Engine) -> None:
    # 3,200 characters: ~9,800 byte-level tokens, over the server's 8,192 and under the app's own 16,384 budget
    long_question = "浮腫" * 1600
    with pytest.raises(Exception, match="longer than the model server's context"):
        app.predict(long_question, 64, 0.0, api_name="/ask")
    client_chat = chat(app, QUESTIONS[1])
    local = engine.ask(Query(QUESTIONS[1], params=GREEDY))
    assert client_chat == (local.reasoning, local.answer)


def test_unknown_model_is_readable_in_status_and_requests(tiny_repos: TinyRepos, vllm: VllmServer) -> None:
    engine = Engine(server_settings(tiny_repos, vllm, model="no-such-model")).load()
    assert engine.ready, engine.error  # the app still comes up
    assert "does not serve `no-such-model`" in engine.status() and "`medcot`" in engine.status()
    with (
        launched(engine) as (url, _),
        client_of(url) as client,
        pytest.raises(Exception, match="does not serve `no-such-model`"),
    ):
        client.predict(QUESTIONS[0], 64, 0.0, api_name="/ask")


# --------------------------------------------------------------------------------------- the page in server mode
BROWSER_TIMEOUT_MS = 30_000
REASONING_TITLE = re.compile(r"^\s*Reasoning\b")


@contextlib.contextmanager
def opened(chromium: Browser, url: str) -> Iterator[Page]:
    """A page as a new visitor sees it (its own browser context), with the model's status line shown."""
    with open_page(chromium, url, BROWSER_TIMEOUT_MS) as page:
        expect(page.locator("#model-status")).to_contain_text("Model:", timeout=BROWSER_TIMEOUT_MS)
        yield page


def ask_on(page: Page, question: str) -> None:
    box = page.locator("#question textarea")
    box.fill(question)
    box.press("Enter")


def greedy(page: Page) -> None:
    """Temperature 0 from the page's slider (typed again where a busy page lost the first entry)."""
    settings = page.get_by_role("button", name=re.compile(r"^Generation settings"))
    settings.click()
    box = page.get_by_label("number input for Temperature (0 = greedy)")
    slider = page.get_by_role("slider", name=re.compile(r"Temperature"))
    for _ in range(3):
        box.fill("0")
        box.press("Enter")
        with contextlib.suppress(AssertionError):
            expect(slider).to_have_value("0", timeout=5000)
            break
    expect(slider).to_have_value("0")
    settings.click()


def snap_to(page: Page, name: str) -> None:
    page.screenshot(path=screenshot_path(name), animations="disabled")


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed")
def test_the_page_in_server_mode_streams_stops_and_shows_server_errors(
    chromium: Browser, app_url: str, rambling_url: str, engine: Engine, vllm: VllmServer
) -> None:
    expect.set_options(timeout=BROWSER_TIMEOUT_MS)  # as tests/test_browser.py does: a busy machine is slow
    local = engine.ask(Query(QUESTIONS[0], params=GREEDY))
    with opened(chromium, app_url) as page:
        # The status line names the server and both models.
        status = page.locator("#model-status")
        for part in (vllm.url, "medcot", BASE_NAME):
            expect(status).to_contain_text(part)
        # Greedy from the page's slider; the reasoning streams into its accordion, the answer as the message.
        greedy(page)
        ask_on(page, QUESTIONS[0])
        chat_box = page.locator("#chat")
        expect(chat_box.get_by_text(local.answer, exact=True)).to_be_visible()
        title = chat_box.get_by_role("button", name=REASONING_TITLE)
        expect(title).to_have_count(1)
        expect(page.locator("#chat .loading-spinner")).to_have_count(0)  # done (a reasoning that took 0 s shows none)
        title.click()
        expect(chat_box.get_by_text(local.reasoning, exact=True)).to_be_visible()
        snap_to(page, "vllm-01-answer-streamed-from-the-server")

        # The server's refusal (the prompt over its context) reads as words; the next question is answered.
        ask_on(page, "浮腫" * 1600)
        expect(page.get_by_text("longer than the model server's context").first).to_be_visible()
        snap_to(page, "vllm-02-server-refusal-readable")
    # The next question is answered. In a fresh page: after a handler error Gradio 6.31's page never re-enables the
    # chat's textbox (its frontend runs only .failure() listeners of a failed event, not ChatInterface's .then()).
    with opened(chromium, app_url) as page:
        greedy(page)
        ask_on(page, QUESTIONS[0])
        expect(page.locator("#chat").get_by_text(local.answer, exact=True)).to_be_visible(timeout=BROWSER_TIMEOUT_MS)

    # Stop: the page's button, mid-answer, and vLLM aborts the request (its log), short of the token limit. A page per
    # round, so that its one reply is the one stopped.
    with contextlib.ExitStack() as pages:
        page: Page | None = None

        def start() -> None:
            nonlocal page
            page = pages.enter_context(opened(chromium, rambling_url))
            ask_on(page, QUESTIONS[0])

        def stop() -> None:
            assert page is not None
            # vLLM is frozen with the answer begun: the page shows what it made before the Stop is pressed.
            expect(page.locator("#chat")).to_contain_text(RAMBLING)
            # An answer that ended before the freeze has no button: that round does not count (stopped_on_server).
            with contextlib.suppress(PlaywrightTimeoutError):
                page.get_by_test_id("stop-button").click(timeout=5000)
            expect(page.locator("#chat .loading-spinner")).to_have_count(0, timeout=BROWSER_TIMEOUT_MS)

        stops_abort(vllm, start, stop)
        assert page is not None
        # The stopped reply keeps its text and says how far it got; the next question can be typed.
        chat_box = page.locator("#chat")
        expect(chat_box.get_by_text(STOPPED_NOTICE.strip("_"))).to_be_visible()
        stats = chat_box.get_by_text(re.compile(r"\d+ tokens \(")).last.inner_text()
        made = int(re.search(r"(\d+) tokens \(", stats).group(1))  # type: ignore[union-attr]
        assert 0 < made < LONG, stats
        expect(chat_box).to_contain_text(RAMBLING)
        expect(page.locator("#question textarea")).to_be_editable()
        snap_to(page, "vllm-03-stopped-and-aborted-on-the-server")

    # A closed tab is the client going away: Gradio closes the chat's generator, and vLLM aborts the request.
    tabs: list[Page] = []

    def open_and_ask() -> None:
        tabs.append(chromium.new_page())
        tabs[-1].goto(rambling_url)
        ask_on(tabs[-1], QUESTIONS[0])

    # Not frozen: Gradio notices a closed tab when it next sends the page an update, and only then ends the handler.
    stops_abort(vllm, open_and_ask, lambda: tabs[-1].close(), needed=1, freeze=False)


def test_a_trl_trained_adapter_is_served_with_its_rank(tiny_repos: TinyRepos, tmp_path: Path) -> None:
    """`python -m training`'s adapter (TRL + peft) under vLLM's --lora-modules, --max-lora-rank read from its
    adapter_config.json as the README says: the app in server mode gets the local path's greedy answer."""
    import json

    from tests.helpers.tiny import tiny_trainer, write_training_rows

    trained = tmp_path / "trained"
    trainer, _, _ = tiny_trainer(tiny_repos.base, write_training_rows(tmp_path / "rows.jsonl"), trained, max_steps=8)
    trainer.train()
    trainer.save_model(str(trained))
    rank = json.loads((trained / "adapter_config.json").read_text())["r"]
    server = VllmServer(
        tiny_repos.base,
        free_port(),
        tmp_path / "vllm.log",
        lora_modules={"trained": trained},
        max_lora_rank=rank,
        max_model_len=MAX_MODEL_LEN,
        served_name=BASE_NAME,
        niceness=VLLM_NICENESS,
    )
    server.start()
    try:
        served = Engine(server_settings(tiny_repos, server, adapter=str(trained), model="trained")).load()
        assert served.ready, served.error
        local = Engine(Settings(base_model=str(tiny_repos.base), adapter=str(trained), dtype="float32")).load()
        for question in QUESTIONS[:2]:
            expected = local.ask(Query(question, params=GREEDY))
            got = served.ask(Query(question, params=GREEDY))
            assert (got.reasoning, got.answer) == (expected.reasoning, expected.answer)
            base = served.ask(Query(question, params=GREEDY, use_adapter=False))
            assert (base.reasoning, base.answer) != (got.reasoning, got.answer)
    finally:
        server.stop()
