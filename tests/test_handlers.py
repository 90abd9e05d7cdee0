"""medcot.ui.handlers: ChatHandlers' methods called directly, over the tiny real engine (no server)."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import gradio as gr
import pytest
from tiny import ADAPTER_ANSWER, ADAPTER_REASONING, BASE_OUTPUT, QUESTIONS

from medcot.engine import Engine
from medcot.events import STATS_PREFIX
from medcot.ui.handlers import ChatHandlers
from medcot.ui.rendering import as_dict

GREEDY = (64, 0.0, 0.95, 64, 1.0)  # max_new_tokens, temperature, top_p, top_k, repetition_penalty


def request(session: str = "s1", **query: str) -> Any:
    return SimpleNamespace(session_hash=session, query_params=query)


async def replies(stream: Any) -> list[Any]:
    return [update async for update in stream]


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


def test_open_link_fills_in_a_checked_question_and_runs_it(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    textbox, _, run = handlers.open_link(request(q=f"  {QUESTIONS[1]} ", run="1"))
    assert textbox.value == QUESTIONS[1] and run is True
    assert asyncio.run(handlers.wait_for_model(run)) is True
    assert asyncio.run(handlers.wait_for_model(False)) is False


def test_export_files_enable_the_downloads_only_with_a_conversation(engine: Engine) -> None:
    handlers = ChatHandlers(engine, engine.stream)
    empty_md, empty_json = handlers.export_files([], [], *GREEDY)
    assert (empty_md.value, empty_md.interactive, empty_json.interactive) == (None, False, False)
    history = [{"role": "user", "content": QUESTIONS[0]}, {"role": "assistant", "content": ADAPTER_ANSWER}]
    markdown, document = handlers.export_files(history, None, *GREEDY)
    assert markdown.interactive and document.interactive
    path = markdown.value["path"] if isinstance(markdown.value, dict) else markdown.value
    assert ADAPTER_ANSWER in Path(path).read_text(encoding="utf-8")


def test_refresh_reports_the_loaded_model_and_stops_polling(engine: Engine) -> None:
    status, timer, *_ = ChatHandlers(engine, engine.stream).refresh()
    assert status.startswith("**Model:**") and timer.active is False


def test_a_primed_base_is_said_so_and_its_sliders_show_the_decoding_it_uses(base_alone: Engine) -> None:
    from medcot.prompt_styles import PRIMER_TEXT

    status, _, _, _, *sliders = ChatHandlers(base_alone, base_alone.stream).refresh()
    defaults = base_alone.generation_defaults()
    assert f"**Prompt:** {PRIMER_TEXT.label}" in status and "repetition penalty 1.15" in status
    assert [slider.value for slider in sliders] == [
        defaults.max_new_tokens,
        defaults.temperature,
        defaults.top_p,
        defaults.top_k,
        defaults.repetition_penalty,
    ]


def test_the_adapters_page_keeps_the_cards_sampling_and_says_nothing_of_a_primer(engine: Engine) -> None:
    status, _, _, _, *sliders = ChatHandlers(engine, engine.stream).refresh()
    assert "Prompt:" not in status
    assert [slider.value for slider in sliders] == [64, 1.0, 0.95, 64, 1.0]


def test_an_answer_whose_reasoning_the_app_closed_says_so_on_screen_and_in_the_export(base_alone: Engine) -> None:
    import json

    handlers = ChatHandlers(base_alone, base_alone.stream)
    updates = asyncio.run(replies(handlers.respond(QUESTIONS[0], [], 64, 0.0, 0.95, 64, 1.15, request())))
    reasoning = updates[-1][0]
    assert reasoning.content == BASE_OUTPUT and reasoning.metadata["log"] == "closed by the app"
    history = [{"role": "user", "content": QUESTIONS[0]}, *(as_dict(message) for message in updates[-1])]
    markdown, document = handlers.export_files(history, [], 64, 0.0, 0.95, 64, 1.15)
    paths = [
        button.value["path"] if isinstance(button.value, dict) else button.value for button in (markdown, document)
    ]
    assert json.loads(Path(paths[1]).read_text())["models"]["prompt"] == base_alone.prompt_style().label
    assert "the app closed it" in Path(paths[0]).read_text()
