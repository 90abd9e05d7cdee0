"""training.recipe: the card's recipe as the default, other YAML files and overrides, every key checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.errors import TrainingError
from training.recipe import CARD_RECIPE, PROJECTIONS, Recipe, load_recipe


def test_the_default_is_the_cards_recipe() -> None:
    recipe = load_recipe()
    # MODEL_CARD.md "Training Procedure", and the Unsloth notebook's LoRA shape.
    assert (recipe.max_steps, recipe.batch_size, recipe.gradient_accumulation_steps) == (500, 8, 1)
    assert (recipe.learning_rate, recipe.lr_scheduler, recipe.warmup_steps) == (5e-5, "linear", 5)
    assert (recipe.weight_decay, recipe.seed, recipe.optimizer) == (0.01, 3407, "auto")
    assert (recipe.lora_r, recipe.lora_alpha, recipe.lora_dropout) == (128, 128.0, 0.0)
    assert recipe.target_modules == PROJECTIONS and len(PROJECTIONS) == 7
    # The shipped file names every key: nothing is left to the dataclass defaults unseen.
    assert set(CARD_RECIPE.read_text().split()) >= {f"{key}:" for key in Recipe.__dataclass_fields__}


def test_overrides_win_and_none_is_no_override() -> None:
    recipe = load_recipe(overrides={"max_steps": 8, "batch_size": 2, "learning_rate": 2e-4, "lora_r": None})
    assert (recipe.max_steps, recipe.batch_size, recipe.learning_rate, recipe.lora_r) == (8, 2, 2e-4, 128)


def test_another_file_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("lora_r: 16\nlora_alpha: 32\ntarget_modules: q_proj\n")
    recipe = load_recipe(path)
    assert (recipe.lora_r, recipe.lora_alpha, recipe.target_modules) == (16, 32.0, ("q_proj",))
    assert recipe.max_steps == 500  # the card's


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("max_stepz: 3\n", "unknown recipe key 'max_stepz'"),
        ("learning_rate: 5\n", "learning_rate must be between"),
        ("batch_size: 0\n", "batch_size must be between 1 and 4096, got 0"),
        ("batch_size: 2.5\n", "batch_size must be a whole number"),
        ("lora_r: yes\n", "lora_r must be a number"),
        ("lr_scheduler: cosine_with_magic\n", "lr_scheduler must be one of"),
        ("optimizer: sgd\n", "optimizer must be one of"),
        ("target_modules: []\n", "target_modules must be a list"),
        ("- a list\n", "must be a mapping"),
        ("max_steps: [\n", "is not valid YAML (line"),
    ],
)
def test_bad_recipes_are_one_readable_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TrainingError, match=message.replace("(", r"\(")) as caught:
        load_recipe(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_bad_overrides_and_missing_files() -> None:
    with pytest.raises(TrainingError, match="command line: max_steps must be between 1 and"):
        load_recipe(overrides={"max_steps": 0})
    with pytest.raises(TrainingError, match="does not exist"):
        load_recipe(Path("/nowhere/recipe.yaml"))
