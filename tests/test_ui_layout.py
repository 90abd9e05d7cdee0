"""medcot.ui.layout: the whole Gradio app over a tiny real model, driven through gradio_client and MCP (its endpoints
and their parameters, the queue, the disclaimer), and the rule that only the UI imports Gradio."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from serving import free_port
from tiny import ADAPTER_ANSWER, ADAPTER_REASONING, QUESTIONS
from ui_calls import GREEDY

from medcot.config import Settings
from medcot.engine import Engine
from medcot.ui.layout import build_demo, launch_kwargs, queue
from medcot.ui.stats_line import STATS_PREFIX


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

    import tiny

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


def test_idle_queue_polls_every_10_ms(engine: Engine) -> None:
    """The idle queue's poll interval is a private attribute of Gradio's queue: fail loudly if it is renamed."""
    from medcot.ui.layout import QUEUE_POLL_S

    assert queue(build_demo(engine), engine)._queue.sleep_when_free == QUEUE_POLL_S == 0.01


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


def test_every_way_of_asking_puts_the_page_back_when_the_answer_fails(engine: Engine) -> None:
    """The textbox, an example's click, Retry and an option's click each run ChatInterface's chat handler in an event
    of their own; each needs its own .failure() listener, or a refusal there leaves the page unable to ask again."""
    demo = build_demo(engine)
    submits = {index for index, fn in demo.fns.items() if getattr(fn.fn, "__name__", "") == "_submit_fn"}
    assert len(submits) == 4, "ChatInterface's ways of asking changed: check each one fails gracefully"
    restoring = {
        fn.trigger_after
        for fn in demo.fns.values()
        if getattr(fn.fn, "__name__", "") == "restore_after_failure" and fn.trigger_only_on_failure
    }
    assert restoring == submits
