"""The training rows: a Hub dataset (``owner/name`` or ``owner/name:config``) or a local JSONL/JSON/CSV/Parquet file,
read through `datasets`, checked for the card's columns, blank rows dropped, and a seeded eval slice held out."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.errors import TrainingError

COLUMNS = ("Question", "Complex_CoT", "Response")  # FreedomIntelligence/medical-o1-reasoning-SFT's
LOCAL_SUFFIXES = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
SAMPLE = Path(__file__).parent / "data" / "medcot-sample.jsonl"


@dataclass
class TrainingData:
    train: Any  # datasets.Dataset
    eval: Any | None  # the held-out slice, or None
    source: str
    rows_read: int
    rows_skipped: int  # rows with a blank question, reasoning or response

    def summary(self) -> dict[str, object]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_skipped_blank": self.rows_skipped,
            "train_rows": len(self.train),
            "eval_rows": 0 if self.eval is None else len(self.eval),
        }


def is_local(source: str) -> bool:
    """A path (it exists, names a known file type or starts like a path) rather than a Hub dataset id."""
    return (
        Path(source).expanduser().exists()
        or source.startswith((".", "/", "~"))
        or source.count("/") != 1
        or (Path(source.split(":")[0]).suffix.lower() in LOCAL_SUFFIXES)
    )


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise TrainingError(f"The data file {path} does not exist (or is not a file).")
    if path.suffix.lower() not in LOCAL_SUFFIXES:
        raise TrainingError(f"{path}: unknown file type; use one of {', '.join(LOCAL_SUFFIXES)}.")


def _read_local(path: Path) -> Any:
    from datasets import load_dataset

    try:
        return load_dataset(LOCAL_SUFFIXES[path.suffix.lower()], data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many kinds for a malformed file; the first line says which
        raise TrainingError(f"The data file {path} cannot be read as {path.suffix}: {_first_line(exc)}") from None


def _read_hub(source: str, split: str) -> Any:
    from datasets import load_dataset

    name, _, config = source.partition(":")
    try:
        return load_dataset(name, config or None, split=split)
    except Exception as exc:  # not found, gated, offline, unknown config or split: all say so in their message
        raise TrainingError(f"Could not load the dataset {source} (split {split}): {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _usable(row: dict[str, Any]) -> bool:
    return all(isinstance(row[column], str) and row[column].strip() for column in COLUMNS)


@contextlib.contextmanager
def _quiet_bars(quiet: bool) -> Iterator[None]:
    """No `datasets` progress bars while a local file is read and filtered (well under a second even for the card's
    19.7k rows), so that a bad file's message is the only line on stderr; a Hub download keeps its bars."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if quiet and was_enabled:
            datasets.enable_progress_bars()


def load_data(source: str, split: str = "train", eval_rows: int = 0, seed: int = 0) -> TrainingData:
    """The rows of ``source`` with the card's columns; ``eval_rows`` of them held out (seeded) for an eval loss."""
    local = is_local(source)
    if local:
        path = Path(source).expanduser()
        _check_file(path)  # before `datasets` is imported: a missing file is reported at once
    with _quiet_bars(local):
        return _load(_read_local(path) if local else _read_hub(source, split), source, eval_rows, seed)


def _load(dataset: Any, source: str, eval_rows: int, seed: int) -> TrainingData:
    missing = [column for column in COLUMNS if column not in dataset.column_names]
    if missing:
        raise TrainingError(
            f"{source} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}: training needs "
            f"{', '.join(COLUMNS)} (it has {', '.join(dataset.column_names) or 'none'})."
        )
    read = len(dataset)
    dataset = dataset.select_columns(list(COLUMNS)).filter(_usable)
    if len(dataset) == 0:
        raise TrainingError(f"{source} has no rows with a non-blank {', '.join(COLUMNS)}: nothing to train on.")
    if eval_rows < 0 or eval_rows >= len(dataset):
        raise TrainingError(
            f"--eval-rows must be between 0 and {len(dataset) - 1} (the usable rows minus one), got {eval_rows}."
        )
    held_out = None
    if eval_rows:
        parts = dataset.train_test_split(test_size=eval_rows, seed=seed)
        dataset, held_out = parts["train"], parts["test"]
    return TrainingData(dataset, held_out, source, read, read - len(dataset) - (eval_rows or 0))
