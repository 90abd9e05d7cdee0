"""Test tiers (a plain `pytest` is the fast one) and shared fixtures: tiny real Gemma 3 repos, engines, chromium."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

# Before anything imports huggingface_hub, which reads it once: no test may reach for the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from medcot.config import Settings
from medcot.engine import Engine
from tests.helpers.tiny import TinyRepos
from tests.helpers.tiny_cache import cached_repos

if TYPE_CHECKING:  # playwright and the browser helpers load only when a browser test runs
    from playwright.sync_api import Browser

    from tests.helpers.browser import SlowStream


# --- tiers: a plain `pytest` runs the fast one; `pytest --all` (what .ci/run calls) adds these markers' tests ---

FULL_TIER_ONLY = ("slow", "browser", "zerogpu", "vllm")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--all",
        action="store_true",
        help=f"run every test, the {', '.join(FULL_TIER_ONLY)} ones included (a plain `pytest` leaves them out)",
    )


def _fast_tier(config: pytest.Config) -> bool:
    """A plain run; an -m expression of one's own picks tests by marker instead."""
    return not config.getoption("--all") and not config.option.markexpr


def _named(item: pytest.Item, config: pytest.Config) -> bool:
    """A test named by its id on the command line (tests/test_x.py::test_y) runs whatever its tier."""
    return any("::" in arg and item.nodeid.startswith(arg) for arg in config.args)


def pytest_report_header(config: pytest.Config) -> str | None:
    if _fast_tier(config):
        return f"fast tier: {', '.join(FULL_TIER_ONLY)} tests left out (`pytest --all` runs everything)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _fast_tier(config):
        return
    left_out = [
        item
        for item in items
        if any(item.get_closest_marker(name) for name in FULL_TIER_ONLY) and not _named(item, config)
    ]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        kept = set(items) - set(left_out)
        items[:] = [item for item in items if item in kept]


# --- tiny real models and engines over them ---


@pytest.fixture(scope="session")
def tiny_cache_dir(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny repos are kept between runs: pytest's cache folder (``pytest --cache-clear`` empties it); with
    the cache plugin off (``-p no:cacheprovider``), this run's temporary folder."""
    cache = getattr(pytestconfig, "cache", None)
    return cache.mkdir("medcot-tiny-repos") if cache is not None else tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="session")
def tiny_repos(tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRepos:
    return cached_repos(tiny_cache_dir, tmp_path_factory.mktemp("tiny-repos"))


@pytest.fixture(scope="session")
def untrained_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base with random weights (built in a blink): what `python -m training` tests train on."""
    from tests.helpers.tiny import save_untrained_base

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
    from tests.helpers.browser import SlowStream

    return SlowStream(engine)


@pytest.fixture(scope="module")
def app_url(engine: Engine, slow: SlowStream) -> Iterator[str]:
    from tests.helpers.serving import serve

    with serve(engine, slow) as url:
        yield url


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
