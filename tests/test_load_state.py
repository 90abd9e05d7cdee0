"""medcot.load_state: the status line and why the base-model comparison cannot run, in sentences for users (what the
loaded backend says of itself, medcot.backends.local here)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from medcot.backends.local import LocalBackend
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.errors import InputError
from medcot.load_state import LoadState
from medcot.model import compiled_step
from medcot.model.compiled_step import CompiledStep
from medcot.request import Query
from tests.helpers.tiny import QUESTIONS

QUESTION = QUESTIONS[0]
GREEDY = GenerationParams(temperature=0, max_new_tokens=64)


def test_status_line_says_what_is_loading_what_failed_and_what_is_loaded(
    engine: Engine, tiny_settings: Settings
) -> None:
    loading = LoadState(tiny_settings)
    loading.progress = ("Downloading the adapter: 1/4 files", 0.25)
    assert loading.status() == "Downloading the adapter: 1/4 files… 25%"
    loading.progress = ("Loading the base model", None)
    assert loading.status() == "Loading the base model…"
    loading.error = "The adapter was not found."
    assert loading.status() == "The adapter was not found."
    noted = Engine(tiny_settings, replace(engine.loaded, notes=["Running the embedded base."]))
    noted.error = "ignored once loaded"
    assert noted.status() == f"{engine.loaded.describe()}. Running the embedded base."
    assert engine.status() == f"{engine.loaded.describe()}."


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


def test_the_status_line_says_answers_are_slower_while_the_decode_step_compiles_or_when_it_failed(
    engine: Engine, tiny_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = LocalBackend(engine.loaded, "static")
    state = Engine(tiny_settings, backend)
    assert not state.status_may_change and "compil" not in state.status()
    building = CompiledStep(backend.static.decoder, tmp_path)  # as build_in_background leaves it until the build ends
    monkeypatch.setattr(backend.static, "compiled", building)
    assert state.status_may_change and "compiling in the background" in state.status()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no C++ compiler here")

    monkeypatch.setattr(compiled_step.torch, "compile", broken)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # build() sets it: restored after the test
    assert not building.build()
    assert not state.status_may_change and "could not be compiled" in state.status()
    assert state.status().startswith(engine.loaded.describe())
