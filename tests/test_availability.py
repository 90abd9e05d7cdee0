"""medcot.availability: the status line and why the base-model comparison cannot run, in sentences for users."""

from __future__ import annotations

from dataclasses import replace

import pytest

from medcot.availability import status_line
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.errors import InputError
from medcot.request import Query
from tests.helpers.tiny import QUESTIONS

QUESTION = QUESTIONS[0]
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)


def test_status_line_says_what_is_loading_what_failed_and_what_is_loaded(engine: Engine) -> None:
    assert status_line(None, None, ("Downloading the adapter: 1/4 files", 0.25)) == (
        "Downloading the adapter: 1/4 files… 25%"
    )
    assert status_line(None, None, ("Loading the base model", None)) == "Loading the base model…"
    assert status_line(None, "The adapter was not found.", ("Loading", 0.5)) == "The adapter was not found."
    noted = replace(engine.loaded, notes=["Running the embedded base."])
    assert status_line(noted, "ignored once loaded", ("Model ready", 1.0)) == (
        f"{engine.loaded.describe()}. Running the embedded base."
    )
    assert status_line(engine.loaded, None, ("Model ready", 1.0)) == f"{engine.loaded.describe()}."


def test_compare_availability_says_why(engine: Engine, unmerged_engine: Engine, tiny_settings: Settings) -> None:
    assert engine.can_compare and unmerged_engine.can_compare and engine.compare_unavailable() is None
    assert "still loading" in Engine(tiny_settings).compare_unavailable()
    base_only = Engine(replace(tiny_settings, adapter=None), replace(unmerged_engine.loaded, kind="base"))
    assert "MEDCOT_ADAPTER is empty" in base_only.compare_unavailable()
    embedded = Engine(tiny_settings, replace(unmerged_engine.loaded, kind="base", embedded=True))
    assert "embedded base model" in embedded.compare_unavailable()
    merged_weights = Engine(tiny_settings, replace(engine.loaded, kind="merged", base_delta=None))
    assert "merged weights" in merged_weights.compare_unavailable()
    with pytest.raises(InputError, match="merged weights"):
        merged_weights.ask(Query(QUESTION, params=GREEDY, use_adapter=False))
