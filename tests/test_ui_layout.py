"""medcot.ui.layout: the whole Gradio app over a tiny real model, driven through gradio_client and MCP (its endpoints
and their parameters, the queue, the disclaimer), and the rule that only the UI imports Gradio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.events import STATS_PREFIX
from medcot.request import Query
from medcot.ui.layout import build_demo, launch_kwargs, queue
from tests.helpers.serving import free_port, serve
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, QUESTIONS
from tests.helpers.ui_calls import GREEDY


def generation_threads() -> int:
    return sum(t.name == "medcot-generate" for t in threading.enumerate())


@pytest.fixture(scope="module")
def app_url(engine: Engine) -> Iterator[str]:
    demo = queue(build_demo(engine), engine)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **launch_kwargs())
    yield url
    demo.close()


@pytest.fixture(scope="module")
def client(app_url: str) -> Client:
    return Client(app_url, verbose=False)


def test_chat_streams_pending_reasoning_then_done_and_a_separate_answer(client: Client) -> None:
    updates = list(client.submit(QUESTIONS[0], *GREEDY, api_name="/chat"))
    pending = [u for u in updates if u and u[0]["metadata"].get("status") == "pending"]
    assert pending, "the reasoning accordion is never shown as pending while streaming"
    # Reasoning text grows while still pending: it streams live, not all at the end.
    assert any(u[0]["content"] for u in pending)
    final = updates[-1]
    reasoning, answer, stats = final
    assert reasoning["metadata"]["title"] == "Reasoning"
    assert reasoning["metadata"]["status"] == "done"
    assert reasoning["metadata"]["duration"] >= 0
    assert reasoning["content"] == ADAPTER_REASONING
    assert answer["content"] == ADAPTER_ANSWER and not answer["metadata"]
    assert stats["content"].startswith(STATS_PREFIX)
    for update in updates:
        for message in update:
            assert "<think>" not in message["content"] and "</think>" not in message["content"]


def test_ask_returns_the_answer_only_unless_reasoning_is_requested(client: Client) -> None:
    assert client.predict(QUESTIONS[1], 64, 0.0, api_name="/ask") == ADAPTER_ANSWER
    with_reasoning = client.predict(QUESTIONS[1], 64, 0.0, 0.95, 64, 1.0, True, api_name="/ask")
    assert with_reasoning == f"Reasoning:\n{ADAPTER_REASONING}\n\nAnswer:\n{ADAPTER_ANSWER}"


def test_ask_rejects_bad_input_with_a_readable_message_and_keeps_serving(client: Client) -> None:
    with pytest.raises(Exception, match="Please type a question"):
        client.predict("   ", api_name="/ask")
    with pytest.raises(Exception, match="temperature must be between"):
        client.predict(QUESTIONS[1], 64, 5.0, api_name="/ask")
    assert client.predict(QUESTIONS[1], 64, 0.0, api_name="/ask") == ADAPTER_ANSWER


def test_cancel_from_a_client_ends_the_generation_thread(tiny_settings: Settings, tmp_path: Path) -> None:

    from tests.helpers import tiny

    # An untrained model told never to stop keeps generating until cancelled.
    tokenizer = tiny.build_tokenizer()
    model = tiny.build_model(tokenizer, seed=1)
    model.generation_config.suppress_tokens = [
        tokenizer.eos_token_id,
        tokenizer.convert_tokens_to_ids("<end_of_turn>"),
    ]
    model.save_pretrained(tmp_path / "endless")
    tokenizer.save_pretrained(tmp_path / "endless")
    endless = Engine(replace(tiny_settings, base_model=str(tmp_path / "endless"), adapter=None)).load()
    demo = queue(build_demo(endless), endless)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port())
    try:
        baseline = generation_threads()
        job = Client(url, verbose=False).submit(QUESTIONS[0], 4096, 0.0, 0.95, 64, 1.0, api_name="/chat")
        deadline = time.monotonic() + 20
        while generation_threads() == baseline and time.monotonic() < deadline:
            time.sleep(0.02)
        assert generation_threads() == baseline + 1, "generation never started"
        time.sleep(0.3)
        job.cancel()
        cancelled = time.monotonic()
        while generation_threads() > baseline and time.monotonic() - cancelled < 5:
            time.sleep(0.01)
        assert generation_threads() == baseline, "the generation thread outlived the cancel"
    finally:
        demo.close()


def test_mcp_ask_tool_answers(app_url: str) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def call() -> tuple[list[str], str]:
        async with (
            streamable_http_client(f"{app_url.rstrip('/')}/gradio_api/mcp/") as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            tools = await session.list_tools()
            names = [tool.name for tool in tools.tools]
            ask = next(name for name in names if name.endswith("ask"))
            description = next(tool.description for tool in tools.tools if tool.name == ask)
            assert "not for clinical use" in description.lower()
            result = await session.call_tool(ask, {"question": QUESTIONS[2], "temperature": 0})
            return names, "".join(part.text for part in result.content if hasattr(part, "text"))

    names, text = asyncio.run(asyncio.wait_for(call(), timeout=60))
    assert any(name.endswith("ask") for name in names)
    assert ADAPTER_ANSWER in text


def test_api_clients_that_set_nothing_get_the_loaded_models_own_decoding(base_alone: Engine) -> None:
    """On the primed base the page's sliders show temperature 0.3 and repetition penalty 1.15; a client that sets
    nothing got the card's 1.0 / 1.0 before (5 of 6 held-out questions then ran to the token limit)."""
    seen: list[GenerationParams] = []

    def stream(query: Query, cancel: threading.Event | None = None) -> Iterator[Any]:
        seen.append(query.params)
        yield from base_alone.stream(query, cancel)

    with serve(base_alone, stream) as url:
        client = Client(url, verbose=False)
        api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        chat = {p["parameter_name"]: p for p in api["/chat"]["parameters"]}
        assert chat["temperature"]["parameter_has_default"] and chat["temperature"]["parameter_default"] is None
        client.predict(QUESTIONS[0], api_name="/chat")
        with contextlib.suppress(AppError):  # the tiny base may end before an answer: /ask then says why
            client.predict(QUESTIONS[0], api_name="/ask")
    assert seen == [base_alone.generation_defaults()] * 2
    assert (seen[0].temperature, seen[0].repetition_penalty) == (0.3, 1.15)


def test_the_api_description_says_unset_values_take_the_models_defaults(client: Client) -> None:
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for endpoint in ("/chat", "/ask"):
        assert "loaded model's own default" in api[endpoint]["description"], endpoint


def test_ask_over_the_api_says_why_there_is_no_answer(client: Client) -> None:
    with pytest.raises(AppError, match=r"token limit \(4 tokens\) cut the reasoning off"):
        client.predict(QUESTIONS[1], 4, 0.0, api_name="/ask")


def test_a_large_upload_is_refused_and_the_app_keeps_serving(app_url: str, client: Client) -> None:
    upload = f"{app_url.rstrip('/')}/gradio_api/upload"
    refused = httpx.post(upload, files={"files": ("big.bin", b"x" * (2 * 1024 * 1024))}, timeout=30)
    assert refused.status_code == 413, refused.text
    assert httpx.post(upload, files={"files": ("small.txt", b"ok")}, timeout=30).status_code == 200
    assert client.predict(QUESTIONS[1], 64, 0.0, api_name="/ask") == ADAPTER_ANSWER
    assert client.predict(QUESTIONS[1], *GREEDY, api_name="/chat")[1]["content"] == ADAPTER_ANSWER


def test_ui_module_is_the_only_gradio_user() -> None:
    import ast
    from pathlib import Path

    library = Path(__file__).parents[1] / "medcot"
    for path in library.rglob("*.py"):
        if path.parent.name == "ui" or path.name == "zerogpu.py":
            continue
        imported = {
            alias.name.split(".")[0]
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)
            for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])
        }
        assert not imported & {"gradio", "spaces"}, f"{path.name} imports the UI stack"


def test_demo_shows_the_disclaimer_and_status(engine: Engine) -> None:
    demo = build_demo(engine)
    markdown = [c.value for c in demo.blocks.values() if isinstance(c, gr.Markdown)]
    assert any("not for clinical use" in str(value) for value in markdown)
    assert any("adapter" in str(value) and "cpu" in str(value) for value in markdown)


def test_chat_api_keeps_its_parameters(client: Client) -> None:
    """The chat handler takes gr.Request for the comparison; API clients must not see a new parameter."""
    chat = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/chat"]
    names = [parameter["parameter_name"] for parameter in chat["parameters"]]
    assert names == ["message", "max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty"]
    assert len(chat["returns"]) == 1
