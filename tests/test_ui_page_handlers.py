"""medcot.ui.page_handlers: PageHandlers' methods called directly, over the tiny real engine (no server)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import gradio as gr
import pytest

from medcot.backends.local import LocalBackend
from medcot.config import DEFAULT_ADAPTER, Settings
from medcot.engine import Engine
from medcot.model.compiled_step import CompiledStep
from medcot.ui.chat_handlers import ChatHandlers
from medcot.ui.page_handlers import PageHandlers
from medcot.ui.rendering import as_dict
from tests.helpers.tiny import ADAPTER_ANSWER, BASE_OUTPUT, QUESTIONS
from tests.helpers.ui_calls import GREEDY, replies, request


def test_open_link_fills_in_a_checked_question_and_runs_it(engine: Engine) -> None:
    handlers = PageHandlers(engine)
    textbox, _, run = handlers.open_link(request(q=f"  {QUESTIONS[1]} ", run="1"))
    assert textbox.value == QUESTIONS[1] and run is True
    assert asyncio.run(handlers.wait_for_model(run)) is True
    assert asyncio.run(handlers.wait_for_model(False)) is False


def test_export_files_enable_the_downloads_only_with_a_conversation(engine: Engine) -> None:
    chat = ChatHandlers(engine, engine.stream)
    handlers = PageHandlers(engine, chat.answers)
    empty_md, empty_json = handlers.export_files([], [], *GREEDY, request())
    assert (empty_md.value, empty_md.interactive, empty_json.interactive) == (None, False, False)
    updates = asyncio.run(replies(chat.respond(QUESTIONS[0], [], *GREEDY, request())))
    history = [{"role": "user", "content": QUESTIONS[0]}, *(as_dict(message) for message in updates[-1])]
    streaming = handlers.export_files(history[:-1], None, *GREEDY, request())
    assert streaming == (gr.skip(), gr.skip())  # the answer is not over yet: the buttons stay as they were
    markdown, document = handlers.export_files(history, None, *GREEDY, request())
    assert markdown.interactive and document.interactive
    path = markdown.value["path"] if isinstance(markdown.value, dict) else markdown.value
    assert ADAPTER_ANSWER in Path(path).read_text(encoding="utf-8")
    other, _ = handlers.export_files(history, None, *GREEDY, request("another-session"))
    other_path = other.value["path"] if isinstance(other.value, dict) else other.value
    assert ADAPTER_ANSWER not in Path(other_path).read_text(encoding="utf-8")  # never another page's answers


def test_refresh_reports_the_loaded_model_and_stops_polling(engine: Engine) -> None:
    status, timer, *_ = PageHandlers(engine).refresh()
    assert status.startswith("**Model:**") and timer.active is False


def test_the_status_line_is_polled_while_the_decode_step_compiles(
    engine: Engine, tiny_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(engine.loaded, "static")
    building = CompiledStep(backend.static.decoder, tmp_path)  # its build not ended
    monkeypatch.setattr(backend.static, "compiled", building)
    page = PageHandlers(Engine(tiny_settings, backend))
    status, timer, *_ = page.refresh()
    assert "compiling in the background" in status and timer.active is True
    building.finished.set()  # the build ended without a compiled step: the eager step stays
    status, timer, *_ = page.refresh()
    assert "could not be compiled" in status and timer.active is False


def test_a_primed_base_is_said_so_and_its_sliders_show_the_decoding_it_uses(base_alone: Engine) -> None:
    from medcot.prompt_styles import PRIMER_TEXT

    status, _, _, _, *sliders, _ = PageHandlers(base_alone).refresh()  # then the footer
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
    status, _, _, _, *sliders, _ = PageHandlers(engine).refresh()  # then the footer
    assert "Prompt:" not in status
    assert [slider.value for slider in sliders] == [64, 1.0, 0.95, 64, 1.0]


def test_an_answer_whose_reasoning_the_app_closed_says_so_on_screen_and_in_the_export(base_alone: Engine) -> None:
    import json

    chat = ChatHandlers(base_alone, base_alone.stream)
    updates = asyncio.run(replies(chat.respond(QUESTIONS[0], [], 64, 0.0, 0.95, 64, 1.15, request())))
    reasoning = updates[-1][0]
    assert reasoning.content == BASE_OUTPUT and reasoning.metadata["log"] == "closed by the app"
    history = [{"role": "user", "content": QUESTIONS[0]}, *(as_dict(message) for message in updates[-1])]
    markdown, document = PageHandlers(base_alone, chat.answers).export_files(
        history, [], 64, 0.0, 0.95, 64, 1.15, request()
    )
    paths = [
        button.value["path"] if isinstance(button.value, dict) else button.value for button in (markdown, document)
    ]
    assert json.loads(Path(paths[1]).read_text())["models"]["prompt"] == base_alone.prompt_style().label
    assert "the app closed it" in Path(paths[0]).read_text()


def test_refresh_names_what_answers_in_the_footer(engine: Engine) -> None:
    footer = PageHandlers(engine).refresh()[-1]
    assert footer.startswith("Answering now:") and engine.loaded.adapter_id in footer  # the fine-tune answers


def test_the_footer_calls_only_the_cards_own_adapter_the_card(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local or self-trained adapter (the tiny one is a folder) is named as what it is, never as the card's model;
    the card's Hub id is."""
    footer = PageHandlers(engine).refresh()[-1]
    assert f"the adapter `{engine.loaded.adapter_id}` over `{engine.loaded.base_id}`, not the published" in footer
    monkeypatch.setattr(engine.backend, "adapter_id", DEFAULT_ADAPTER)
    footer = PageHandlers(engine).refresh()[-1]
    assert "a LoRA fine-tune of Gemma 3 270M, as `alphaaico/" in footer and "not the published" not in footer


def test_the_sliders_are_filled_once_per_page_so_polling_keeps_what_the_visitor_set(engine: Engine) -> None:
    """In server mode the timer polls for as long as the page is open: after the first fill, its ticks leave the
    sliders alone (they had reset them every second, undoing the visitor's settings); another page still gets its
    fill."""
    page = PageHandlers(engine)
    opened = page.open_page(request("visitor"))
    assert all(isinstance(slider, gr.Slider) for slider in opened[4:9])
    ticked = page.refresh(request("visitor"))
    assert all(slider == gr.skip() for slider in ticked[4:9])
    other = page.refresh(request("other-visitor"))
    assert all(isinstance(slider, gr.Slider) for slider in other[4:9])
    assert all(slider == gr.skip() for slider in page.refresh(request("other-visitor"))[4:9])
