"""Shared fixtures: tiny real Gemma 3 repos on disk and engines over them."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

# Before anything imports huggingface_hub, which reads it once: no test may reach for the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny import TinyRepos, build_repos

from medcot.config import Settings
from medcot.engine import Engine

if TYPE_CHECKING:  # playwright and the browser helpers load only when a browser test runs
    from browser import SlowStream
    from playwright.sync_api import Browser


@pytest.fixture(scope="session")
def tiny_repos(tmp_path_factory: pytest.TempPathFactory) -> TinyRepos:
    return build_repos(tmp_path_factory.mktemp("tiny-repos"))


@pytest.fixture(scope="session")
def untrained_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base with random weights (built in a blink): what `python -m training` tests train on."""
    from tiny import save_untrained_base

    return save_untrained_base(tmp_path_factory.mktemp("untrained-base"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_repos: TinyRepos) -> Settings:
    """Base + adapter from local folders, f32 (the CPU speed modes are tested on their own)."""
    return Settings(
        base_model=str(tiny_repos.base), adapter=str(tiny_repos.adapter), dtype="float32", max_new_tokens=64
    )


@pytest.fixture(scope="session")
def engine(tiny_settings: Settings) -> Engine:
    """A loaded engine over the tiny base + adapter (merged), shared by read-only tests."""
    loaded = Engine(tiny_settings).load()
    assert loaded.ready, loaded.error
    return loaded


@pytest.fixture(scope="session")
def base_alone(tiny_settings: Settings) -> Engine:
    """The tiny base with no adapter, loaded as the embedded base is (``embedded`` set): primed by default."""
    from medcot.model.loading import load_model

    settings = replace(tiny_settings, adapter=None)
    loaded = load_model(settings)
    loaded.embedded = True
    return Engine(settings, loaded)


@pytest.fixture(scope="session")
def unmerged_engine(tiny_settings: Settings) -> Engine:
    loaded = Engine(replace(tiny_settings, merge_adapter=False)).load()
    assert loaded.ready, loaded.error
    return loaded


# --- browser tests (tests/test_browser.py, tests/test_embed.py): one slowed app and one chromium per module ---


@pytest.fixture(scope="module")
def slow(engine: Engine) -> SlowStream:
    from browser import SlowStream

    return SlowStream(engine)


@pytest.fixture(scope="module")
def app_url(engine: Engine, slow: SlowStream) -> Iterator[str]:
    from serving import serve

    with serve(engine, slow) as url:
        yield url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    from browser import CHROMIUM, CHROMIUM_ARGS
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
