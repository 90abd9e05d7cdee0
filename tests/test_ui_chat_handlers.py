"""medcot.ui.chat_handlers: ChatHandlers' methods called directly, over the tiny real engine (no server)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
from tiny import ADAPTER_ANSWER, ADAPTER_REASONING, BASE_OUTPUT, QUESTIONS
from ui_calls import GREEDY, replies, request

from medcot.engine import Engine
from medcot.events import Finished, Stats
from medcot.ui.chat_handlers import ChatHandlers
from medcot.ui.stats_line import STATS_PREFIX, format_stats


def test_ask_answers_and_adds_the_reasoning_on_request(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    assert asyncio.run(handlers.ask(QUESTIONS[0], *GREEDY)) == ADAPTER_ANSWER
    both = asyncio.run(handlers.ask(QUESTIONS[0], *GREEDY, include_reasoning=True))
    assert both == f"Reasoning:\n{ADAPTER_REASONING}\n\nAnswer:\n{ADAPTER_ANSWER}"
    with pytest.raises(gr.Error, match="type a question"):
        asyncio.run(handlers.ask("   ", *GREEDY))


def test_ask_shows_the_engines_token_budget_as_its_default(engine: Engine) -> None:
    tighter = Engine(replace(engine.settings, max_new_tokens=7), engine.loaded)
    parameters = inspect.signature(ChatHandlers(tighter, tighter.stream).ask).parameters
    assert "self" not in parameters and parameters["max_new_tokens"].default == 7


def test_respond_streams_the_pending_accordion_then_the_answer_and_stats(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    updates = asyncio.run(replies(handlers.respond(QUESTIONS[0], [], *GREEDY, request())))
    assert updates[0][0].metadata["status"] == "pending" and updates[0][0].content == ""
    reasoning, answer, stats = updates[-1]
    assert (reasoning.content, reasoning.metadata["status"]) == (ADAPTER_REASONING, "done")
    assert answer.content == ADAPTER_ANSWER and stats.content.startswith(STATS_PREFIX)


def test_respond_refuses_bad_settings_with_a_readable_error(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    with pytest.raises(gr.Error, match="max_new_tokens"):
        asyncio.run(replies(handlers.respond(QUESTIONS[0], [], 0, 0.0, 0.95, 64, 1.0, request())))


def test_compare_runs_the_base_model_into_its_column(unmerged_engine: Engine) -> None:
    handlers = ChatHandlers(unmerged_engine, unmerged_engine.stream)
    column, chatbot = handlers.set_compare(True, request("s2"))
    assert column.visible and chatbot.show_label and "s2" in handlers.relay.comparing

    async def both() -> list[Any]:
        base = asyncio.ensure_future(replies(handlers.show_base([], True, request("s2"))))
        await replies(handlers.respond(QUESTIONS[0], [], *GREEDY, request("s2")))
        return await base

    final = asyncio.run(both())[-1]
    assert final[0]["content"] == QUESTIONS[0] and final[1]["content"] == BASE_OUTPUT
    handlers.forget(request("s2"))
    assert "s2" not in handlers.relay.comparing


def test_set_compare_stays_off_where_the_engine_cannot_compare(engine: Engine) -> None:
    broken = Engine(engine.settings)
    broken.error = "The model could not be loaded."
    handlers = ChatHandlers(broken, broken.stream)
    column, _ = handlers.set_compare(True, request())
    assert not column.visible and not handlers.relay.comparing


def test_stop_shows_the_stopped_answers_stats_once_its_stream_finished(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    request = SimpleNamespace(session_hash="s1")
    finished = handlers.finished.begin("s1")
    history = [
        {"role": "user", "content": QUESTIONS[0]},
        {"role": "assistant", "content": "Fluid", "metadata": {"title": "Reasoning", "status": "pending"}},
    ]
    stats = Stats(12, 3, 3, 0, 0.2, 0.5, False, False, True, 0)
    threading.Timer(0.2, finished, [Finished(stats)]).start()  # the stream finishes just after the Stop
    shown = handlers.stop(history, request)
    assert shown[1]["metadata"] == {"title": "Reasoning", "status": "done", "log": "stopped"}
    assert shown[2]["content"] == format_stats(stats, answered=False)
    assert "Stopped" in shown[2]["content"] and "3 tokens" in shown[2]["content"]
    assert handlers.stop(shown, request) == shown  # the second Stop handler (the chat's state) changes nothing more


def test_after_a_refusal_the_page_gets_its_conversation_back_and_after_a_stop_keeps_it(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    before = [{"role": "user", "content": "first?"}, {"role": "assistant", "content": "an answer"}]
    failed = [*before, {"role": "user", "content": "x" * 9000}, {"role": "assistant", "content": ""}]
    with pytest.raises(gr.Error, match="too long"):
        asyncio.run(replies(handlers.respond("x" * 9000, before, *GREEDY, request("s1"))))
    chat, state, box = handlers.restore_after_failure(failed, "x" * 9000, request("s1"))
    assert chat == state == before
    assert box["value"] == "x" * 9000 and box["interactive"] is True and box["stop_btn"] is False
    # A Stop also ends the event without success: the stopped chat stays as it is, the box is enabled again.
    chat, state, box = handlers.restore_after_failure(failed, "x" * 9000, request("s1"))
    assert isinstance(chat, type(gr.skip())) and "value" not in box and box["interactive"] is True
