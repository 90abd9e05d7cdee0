"""The training's user errors: bad input the CLI reports in one line, with a non-zero exit and no traceback."""

from __future__ import annotations

from medcot.errors import UserError


class TrainingError(UserError):
    """A bad recipe, dataset, base model or output: the message says what is wrong and what to do."""
