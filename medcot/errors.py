"""Errors whose message is for the user: the UI and CLI show them as they are. Each keeps a built-in base
(ValueError for bad input, RuntimeError for a failure), so callers catching those still do."""

from __future__ import annotations


class UserError(Exception):
    """The message is for the user: readable, safe to show, and says what to do."""


class InputError(UserError, ValueError):
    """The request itself is unusable (the question, the history or a generation setting)."""


class PromptTooLongError(UserError, ValueError):
    """The newest question alone does not fit the prompt budget."""


class ConfigError(UserError, ValueError):
    """An environment variable holds a value the app cannot use."""


class ModelLoadError(UserError, RuntimeError):
    """A model could not be loaded."""


class GenerationError(UserError, RuntimeError):
    """generate() failed in its thread; raised in the caller's thread with the original as __cause__."""
