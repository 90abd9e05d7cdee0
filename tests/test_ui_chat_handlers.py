"""medcot.ui.chat_handlers: ChatHandlers' methods called directly, over the tiny real engine (no server)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest

from medcot.config import GenerationParams
from medcot.engine import Engine
from medcot.events import Finished, Stats
from medcot.request import Query
from medcot.ui.answers import AnswerRecord
from medcot.ui.chat_handlers import ChatHandlers
from medcot.ui.stats_line import STATS_PREFIX, format_stats
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, BASE_OUTPUT, QUESTIONS
from tests.helpers.ui_calls import GREEDY, replies, request


def test_ask_answers_and_adds_the_reasoning_on_request(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    assert asyncio.run(handlers.ask(QUESTIONS[0], *GREEDY)) == ADAPTER_ANSWER
    both = asyncio.run(handlers.ask(QUESTIONS[0], *GREEDY, include_reasoning=True))
    assert both == f"Reasoning:\n{ADAPTER_REASONING}\n\nAnswer:\n{ADAPTER_ANSWER}"
    with pytest.raises(gr.Error, match="type a question"):
        asyncio.run(handlers.ask("   ", *GREEDY))


def recording(engine: Engine, seen: list[Query], stop_after: int | None = None) -> Any:
    """engine.stream, noting each query; ``stop_after`` events, the request is cancelled (as a Stop does)."""

    def stream(query: Query, cancel: threading.Event | None = None) -> Iterator[Any]:
        seen.append(query)
        cancel = cancel or threading.Event()
        for count, event in enumerate(engine.stream(query, cancel)):
            if count == stop_after:
                cancel.set()
            yield event

    return stream


def test_ask_and_chat_left_unset_decode_at_the_loaded_models_own_defaults(base_alone: Engine) -> None:
    tighter = Engine(replace(base_alone.settings, max_new_tokens=7), base_alone.loaded)
    seen: list[Query] = []
    handlers = ChatHandlers(tighter, recording(tighter, seen))
    parameters = inspect.signature(handlers.ask).parameters
    assert "self" not in parameters and parameters["max_new_tokens"].default is None
    with contextlib.suppress(gr.Error):  # 7 tokens may end before an answer: that is /ask's error, tested below
        asyncio.run(handlers.ask(QUESTIONS[0]))
    asyncio.run(replies(handlers.respond(QUESTIONS[0], [], request=request())))
    primed = tighter.generation_defaults()
    assert (primed.temperature, primed.repetition_penalty, primed.max_new_tokens) == (0.3, 1.15, 7)
    assert [query.params for query in seen] == [primed, primed]


def test_ask_never_returns_a_silent_empty_answer(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    with pytest.raises(gr.Error, match=r"token limit \(4 tokens\) cut the reasoning off.*Raise max_new_tokens"):
        asyncio.run(handlers.ask(QUESTIONS[0], 4, 0.0))
    with_reasoning = asyncio.run(handlers.ask(QUESTIONS[0], 4, 0.0, include_reasoning=True))
    assert (
        with_reasoning.startswith("Reasoning:\n")
        and "Answer:\n[No answer: The token limit (4 tokens)" in with_reasoning
    )
    stopped = ChatHandlers(engine, recording(engine, [], stop_after=2))
    with pytest.raises(gr.Error, match="Stopped"):
        asyncio.run(stopped.ask(QUESTIONS[0], 64, 0.0))


def test_ask_notes_an_answer_the_token_limit_cut_off(engine: Engine) -> None:
    reasoning = f"<think>\n{ADAPTER_REASONING}\n</think>\n"
    limit = len(engine.loaded.tokenizer.encode(reasoning, add_special_tokens=False)) + 1
    cut = asyncio.run(ChatHandlers(engine, engine.stream).ask(QUESTIONS[0], limit, 0.0))
    assert cut != ADAPTER_ANSWER and ADAPTER_ANSWER.startswith(cut.partition("\n\n")[0])
    assert cut.endswith(f"[Note: The token limit ({limit} tokens) cut the answer off.]")


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
        base = asyncio.ensure_future(replies(handlers.base.show_base([], True, request("s2"))))
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
    record = handlers.answers.add("s1", AnswerRecord(QUESTIONS[0], GenerationParams()))
    finished = record.begin_stream()
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
    assert shown[2]["metadata"] == {"id": record.id} and record.stopped and record.stats == stats
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
