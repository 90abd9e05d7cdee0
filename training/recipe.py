"""The training recipe: a YAML file of hyperparameters (the model card's by default), checked key by key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from training.errors import TrainingError

CARD_RECIPE = Path(__file__).with_name("card_recipe.yaml")
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
OPTIMIZERS = ("auto", "adamw_torch", "adamw_8bit")

# Each number's allowed range (inclusive): a typo such as a learning rate of 5 is refused before any loading.
RANGES: dict[str, tuple[float, float]] = {
    "max_steps": (1, 10_000_000),
    "batch_size": (1, 4096),
    "gradient_accumulation_steps": (1, 4096),
    "learning_rate": (1e-9, 1.0),
    "warmup_steps": (0, 10_000_000),
    "weight_decay": (0.0, 1.0),
    "seed": (0, 2**32 - 1),
    "max_length": (16, 131_072),
    "lora_r": (1, 1024),
    "lora_alpha": (1e-3, 1e6),
    "lora_dropout": (0.0, 0.9),
    "save_steps": (1, 10_000_000),
    "logging_steps": (1, 10_000_000),
}


@dataclass(frozen=True)
class Recipe:
    max_steps: int = 500
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_steps: int = 5
    weight_decay: float = 0.01
    seed: int = 3407
    max_length: int = 2048
    lora_r: int = 128
    lora_alpha: float = 128.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = field(default=PROJECTIONS)
    optimizer: str = "auto"
    save_steps: int = 100
    logging_steps: int = 1

    def as_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["target_modules"] = list(self.target_modules)
        return values


KEYS = tuple(f.name for f in dataclasses.fields(Recipe))


def _number(key: str, value: object, where: str) -> int | float:
    low, high = RANGES[key]
    whole = isinstance(Recipe.__dataclass_fields__[key].default, int)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TrainingError(f"{where}: {key} must be a number between {low:g} and {high:g}, got {value!r}.")
    if whole and value != int(value):
        raise TrainingError(f"{where}: {key} must be a whole number, got {value!r}.")
    if value != value or not low <= value <= high:  # NaN fails the first test
        raise TrainingError(f"{where}: {key} must be between {low:g} and {high:g}, got {value!r}.")
    return int(value) if whole else float(value)


def _choice(key: str, value: object, options: tuple[str, ...], where: str) -> str:
    if value not in options:
        raise TrainingError(f"{where}: {key} must be one of {', '.join(options)}; got {value!r}.")
    return str(value)


def _modules(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value or not all(isinstance(item, str) for item in value):
        raise TrainingError(f"{where}: target_modules must be a list of module names such as {PROJECTIONS[0]}.")
    return tuple(value)


def checked(values: Mapping[str, object], where: str, base: Recipe | None = None) -> Recipe:
    """``base`` (default: the dataclass defaults) with ``values`` applied, every key and value checked."""
    updates: dict[str, object] = {}
    for key, value in values.items():
        if key not in KEYS:
            raise TrainingError(f"{where}: unknown recipe key {key!r}; known keys: {', '.join(KEYS)}.")
        if key in RANGES:
            updates[key] = _number(key, value, where)
        elif key == "lr_scheduler":
            updates[key] = _choice(key, value, SCHEDULERS, where)
        elif key == "optimizer":
            updates[key] = _choice(key, value, OPTIMIZERS, where)
        else:
            updates[key] = _modules(value, where)
    return dataclasses.replace(base or Recipe(), **updates)


def load_recipe(path: Path | None = None, overrides: Mapping[str, object] | None = None) -> Recipe:
    """The recipe in ``path`` (default: the card's), then the command line's overrides (None values skipped)."""
    path = CARD_RECIPE if path is None else Path(path)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"The recipe file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingError(f"The recipe file {path} cannot be read: {exc}") from None
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise TrainingError(f"The recipe file {path} is not valid YAML{line}.") from None
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise TrainingError(f"The recipe file {path} must be a mapping of keys to values, such as `max_steps: 500`.")
    # A file other than the card's starts from the card's values: it need only name what it changes.
    base = None if path == CARD_RECIPE else load_recipe(CARD_RECIPE)
    recipe = checked(loaded, str(path), base)
    given = {key: value for key, value in (overrides or {}).items() if value is not None}
    return checked(given, "command line", recipe)
