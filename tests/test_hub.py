"""medcot.model.hub: local folders or Hub repos, the Hub's errors in sentences, and which tokenizer is used."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from medcot.config import Settings
from medcot.engine import Engine
from medcot.errors import ModelLoadError
from medcot.model.hub import fetch, is_adapter_folder, is_hub_unreachable, load_tokenizer
from medcot.model.loading import load_model
from medcot.prompt import GEMMA3_CHAT_TEMPLATE
from tests.helpers.readable import assert_readable, load_error
from tests.helpers.tiny import TinyRepos


def test_folder_detection(tiny_repos: TinyRepos) -> None:
    assert is_adapter_folder(tiny_repos.adapter)
    assert not is_adapter_folder(tiny_repos.merged)
    assert not is_adapter_folder(tiny_repos.base)


def test_adapter_without_tokenizer_uses_the_bases(engine: Engine, tiny_repos: TinyRepos) -> None:
    assert not (tiny_repos.adapter / "tokenizer_config.json").exists()
    assert engine.loaded.tokenizer.name_or_path == str(tiny_repos.base)
    assert load_tokenizer(tiny_repos.adapter, tiny_repos.base).name_or_path == str(tiny_repos.base)


def test_adapter_folder_shipping_a_tokenizer_uses_its_own(tiny_repos: TinyRepos, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter-with-tokenizer"
    shutil.copytree(tiny_repos.adapter, adapter)
    own = AutoTokenizer.from_pretrained(tiny_repos.base)
    own.chat_template = GEMMA3_CHAT_TEMPLATE + "{# the adapter's own #}"
    own.save_pretrained(adapter)
    tokenizer = load_tokenizer(adapter, tiny_repos.base)
    assert tokenizer.name_or_path == str(adapter)
    assert tokenizer.chat_template.endswith("{# the adapter's own #}")
    loaded = load_model(Settings(base_model=str(tiny_repos.base), adapter=str(adapter), dtype="float32"))
    assert loaded.tokenizer.name_or_path == str(adapter)


def test_bare_base_gets_the_gemma3_chat_template(tiny_repos: TinyRepos, tiny_settings: Settings) -> None:
    assert not AutoTokenizer.from_pretrained(tiny_repos.bare_base).chat_template
    assert load_tokenizer(tiny_repos.bare_base, None).chat_template == GEMMA3_CHAT_TEMPLATE
    loaded = load_model(replace(tiny_settings, base_model=str(tiny_repos.bare_base), adapter=None))
    assert loaded.tokenizer.chat_template == GEMMA3_CHAT_TEMPLATE
    # An adapter without a tokenizer over the bare base: the base's tokenizer, given the template.
    assert load_tokenizer(tiny_repos.adapter, tiny_repos.bare_base).chat_template == GEMMA3_CHAT_TEMPLATE


def test_base_tokenizer_keeps_its_own_template(tiny_repos: TinyRepos) -> None:
    shipped = AutoTokenizer.from_pretrained(tiny_repos.base).chat_template
    assert shipped
    assert load_tokenizer(tiny_repos.base, None).chat_template == shipped


def test_unreachable_hub_is_explained(tiny_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline mode (read by huggingface_hub at import, so set on its constants) and a repo no cache holds.
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    error = load_error(replace(tiny_settings, adapter="medcot-tests/adapter-that-is-not-cached"))
    assert "cannot be reached" in str(error) and "medcot-tests/adapter-that-is-not-cached" in str(error)


def test_download_errors_never_show_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_download(*args: object, **kwargs: object) -> str:
        raise RuntimeError(f"server said no to token {kwargs['token']}")

    monkeypatch.setattr("medcot.model.hub.snapshot_download", failing_download)
    settings = Settings(hf_token="hf_secret_value")
    with pytest.raises(ModelLoadError) as caught:
        fetch("some-org/some-repo", settings, lambda message, fraction: None, "adapter")
    assert "hf_secret_value" not in str(caught.value) and "***" in str(caught.value)
    assert_readable(caught.value)


def test_is_hub_unreachable() -> None:
    assert is_hub_unreachable(ConnectionError("refused"))
    assert is_hub_unreachable(OSError("offline"))
    assert not is_hub_unreachable(ValueError("bad"))
