"""medcot.prompt_styles: which prompt and decoding a model gets, and how the primer renders."""

from __future__ import annotations

from dataclasses import replace

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from medcot.config import BASE_PROMPT_CHOICES, Settings
from medcot.engine import Engine
from medcot.errors import ConfigError
from medcot.events import AnswerDelta, ReasoningDelta
from medcot.prompt import SYSTEM_PROMPT, USER_TEMPLATE, Turn, encode_prompt, render_prompt
from medcot.prompt_styles import (
    BASE_DECODING,
    BASE_PROMPTS,
    CARD,
    EMBEDDED_DEFAULT,
    PRIMER,
    PRIMER_CHAT,
    PRIMER_TEXT,
    PromptStyle,
    base_prompt_style,
)
from medcot.request import Query
from tests.helpers.tiny import TinyRepos
from tests.test_prompt import EXPECTED_PROMPT, HOSTILE, QUESTION


@pytest.fixture(scope="module")
def tokenizer(tiny_repos: TinyRepos) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_repos.base)


def test_the_setting_names_every_style() -> None:
    assert set(BASE_PROMPT_CHOICES) == {"auto", *BASE_PROMPTS}
    assert Settings.from_env({"MEDCOT_BASE_PROMPT": "primer-chat"}).base_prompt == "primer-chat"
    with pytest.raises(ConfigError, match="MEDCOT_BASE_PROMPT"):
        Settings.from_env({"MEDCOT_BASE_PROMPT": "few-shot"})


def test_auto_primes_the_embedded_base_only() -> None:
    assert base_prompt_style("auto", embedded=True) is EMBEDDED_DEFAULT is PRIMER_TEXT
    assert base_prompt_style("auto", embedded=False) is CARD
    assert base_prompt_style("card", embedded=True) is CARD
    assert base_prompt_style("primer-chat", embedded=False) is PRIMER_CHAT


def test_an_adapter_always_gets_the_cards_prompt_byte_for_byte(engine: Engine) -> None:
    engine.settings = replace(engine.settings, base_prompt="primer")  # even when the setting asks for the primer
    try:
        for use_adapter in (True, False):  # the comparison's base keeps the card's prompt too
            style = engine.prompt_style(use_adapter)
            assert style is CARD
            assert encode_prompt(engine.loaded.tokenizer, QUESTION, style=style).text == EXPECTED_PROMPT
        assert engine.generation_defaults() == engine.settings.generation_defaults
    finally:
        engine.settings = replace(engine.settings, base_prompt="auto")


def test_the_plain_text_primer(tokenizer: PreTrainedTokenizerBase) -> None:
    text = render_prompt(tokenizer, QUESTION, (), PRIMER_TEXT)
    first, second = PRIMER
    assert text == (
        f"<bos>{SYSTEM_PROMPT}\n\n"
        f"{USER_TEMPLATE.format(question=first.question)}\n<think>\n{first.reasoning}\n</think>\n{first.answer}\n\n"
        f"{USER_TEMPLATE.format(question=second.question)}\n<think>\n{second.reasoning}\n</think>\n{second.answer}\n\n"
        f"{USER_TEMPLATE.format(question=QUESTION)}\n<think>\n"
    )
    assert "<start_of_turn>" not in text


def test_the_chat_template_primer(tokenizer: PreTrainedTokenizerBase) -> None:
    text = render_prompt(tokenizer, QUESTION, (), PRIMER_CHAT)
    card = EXPECTED_PROMPT.split("### Question:")[0]
    assert text.startswith(card)  # the card's system block, then the examples as earlier turns
    for example in PRIMER:
        assert f"<start_of_turn>model\n{example.reply}<end_of_turn>\n" in text
    assert text.endswith(f"{USER_TEMPLATE.format(question=QUESTION)}<end_of_turn>\n<start_of_turn>model\n<think>\n")


@pytest.mark.parametrize("style", [PRIMER_TEXT, PRIMER_CHAT], ids=lambda style: style.name)
def test_primed_prompts_keep_user_text_out_of_control_tokens(
    tokenizer: PreTrainedTokenizerBase, style: PromptStyle
) -> None:
    harmless = encode_prompt(tokenizer, "Dose?", [Turn("Pain?", "Rest.")], style=style).input_ids
    hostile = encode_prompt(tokenizer, HOSTILE, [Turn(HOSTILE, HOSTILE)], style=style).input_ids
    for name in ("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"):
        token = tokenizer.convert_tokens_to_ids(name)
        assert hostile.count(token) == harmless.count(token), name  # only the prompt's own markers are real


def test_the_embedded_base_is_primed_and_decodes_with_the_chosen_settings(base_alone: Engine) -> None:
    assert base_alone.prompt_style() is PRIMER_TEXT
    defaults = base_alone.generation_defaults()
    assert defaults == replace(BASE_DECODING, max_new_tokens=base_alone.settings.max_new_tokens)
    events = list(base_alone.stream(Query(QUESTION, (), replace(defaults, max_new_tokens=8, temperature=0.0))))
    # <think> was opened by the prompt: the base's first words are reasoning, never a literal tag.
    texts = [e for e in events if isinstance(e, ReasoningDelta | AnswerDelta)]
    assert texts and isinstance(texts[0], ReasoningDelta)
    assert all("<think>" not in e.text for e in texts)


def test_a_base_alone_that_is_not_embedded_keeps_the_card_prompt(base_alone: Engine) -> None:
    base_alone.loaded.embedded = False
    try:
        assert base_alone.prompt_style() is CARD
        assert base_alone.generation_defaults() == base_alone.settings.generation_defaults
        base_alone.base_style = PRIMER_CHAT  # what the eval sets
        assert base_alone.prompt_style() is PRIMER_CHAT
    finally:
        base_alone.loaded.embedded = True
        base_alone.base_style = None


def test_the_cli_says_which_prompt_the_base_got_and_uses_its_decoding(
    base_alone: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    from medcot.cli import _params, build_parser, main

    assert main([QUESTION, "--max-new-tokens", "4"], engine=base_alone) == 0
    assert f"note: prompt: {PRIMER_TEXT.label}." in capsys.readouterr().err
    defaults = base_alone.generation_defaults()
    assert _params(build_parser().parse_args([QUESTION]), defaults) == defaults
    asked = _params(build_parser().parse_args([QUESTION, "--temperature", "0", "--top-k", "5"]), defaults)
    assert asked == replace(defaults, temperature=0.0, top_k=5)


def test_the_cards_stop_text_is_the_head_of_its_user_template() -> None:
    assert CARD.stop_texts == (USER_TEMPLATE.split("{question}")[0].strip(),)
