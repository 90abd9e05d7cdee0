"""A load failure as users see it: one line, no traceback, no chained cause (tests of loading and of the Hub)."""

from __future__ import annotations

import pytest

from medcot.config import Settings
from medcot.errors import ModelLoadError
from medcot.model.loading import load_model


def assert_readable(error: ModelLoadError) -> None:
    message = str(error)
    assert message and "\n" not in message
    assert "Traceback" not in message and 'File "' not in message
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def load_error(settings: Settings) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as caught:
        load_model(settings)
    assert_readable(caught.value)
    return caught.value
