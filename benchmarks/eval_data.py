"""Question sets for the eval: the shipped one, local JSONL/JSON/CSV/Parquet files, or a Hub dataset.

Every source gives rows with a ``Question`` column and optionally ``Response`` (the reference answer, as in the
card's training data FreedomIntelligence/medical-o1-reasoning-SFT) and ``Accept`` (terms that count as a match,
a list or a "|"-separated string).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHIPPED = Path(__file__).parent / "data" / "questions.jsonl"
LOCAL_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


class QuestionSetError(ValueError):
    """The question set cannot be read or has no usable rows; the message says why."""


@dataclass(frozen=True)
class Item:
    question: str
    reference: str | None = None
    accept: tuple[str, ...] = ()
    source: str = ""


def _accept(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(term.strip() for term in value.split("|") if term.strip())
    return tuple(str(term).strip() for term in value if str(term).strip())


def items_from_rows(rows: Iterable[Mapping[str, Any]], origin: str) -> list[Item]:
    """Rows with a ``Question`` column (any letter case) as eval items; rows without a question are skipped."""
    items = []
    for row in rows:
        fields = {str(key).lower(): value for key, value in row.items()}
        question = fields.get("question")
        if not isinstance(question, str) or not question.strip():
            continue
        reference = fields.get("response")
        items.append(
            Item(
                question.strip(),
                reference.strip() if isinstance(reference, str) and reference.strip() else None,
                _accept(fields.get("accept")),
                str(fields.get("source") or origin),
            )
        )
    return items


def _local_rows(path: Path) -> list[Mapping[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as file:
            return [json.loads(line) for line in file if line.strip()]
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, list) else data.get("rows", data.get("data", []))
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as file:
            return list(csv.DictReader(file))
    if suffix == ".parquet":
        from datasets import Dataset  # the dev extra; pyarrow reads the file

        return list(Dataset.from_parquet(str(path)))
    raise QuestionSetError(f"{path}: unknown file type (use one of {', '.join(LOCAL_SUFFIXES)}).")


def _hub_rows(dataset_id: str, config: str | None, split: str) -> Any:
    """A Hub dataset's split through `datasets` (cached as it usually is; HF_HUB_OFFLINE honoured)."""
    try:
        from datasets import load_dataset
    except ImportError:
        raise QuestionSetError("Hub datasets need `datasets`: pip install -e '.[dev]'") from None
    try:
        return load_dataset(dataset_id, config, split=split)
    except Exception as exc:  # no network, unknown id or split: one readable line
        raise QuestionSetError(f"Could not load the dataset {dataset_id!r} ({config}, {split}): {exc}") from None


def load_questions(
    source: str | None = None,
    config: str | None = None,
    split: str = "train",
    offset: int = 0,
    limit: int | None = None,
    every: int = 1,
) -> list[Item]:
    """The question set ``source`` names: None for the shipped set, a local file, or a Hub dataset id.

    ``offset``/``every``/``limit`` take a slice (every ``every``-th row from ``offset``, at most ``limit``), e.g. the
    last rows of a training set as a rough held-out sample, or a spread-out part of a set for a quick comparison.
    """
    if source is None:
        path: Path | None = SHIPPED
    else:
        path = Path(source).expanduser()
        if not path.exists() and (path.suffix.lower() in LOCAL_SUFFIXES or source.startswith((".", "/", "~"))):
            raise QuestionSetError(f"{source}: no such file.")
        if not path.exists():
            path = None
    if path is not None:
        rows, origin = _local_rows(path), path.name
    else:
        rows, origin = _hub_rows(str(source), config, split), str(source)
    if offset < 0:  # counted from the end (lists and datasets.Dataset both have a length)
        offset = max(len(rows) + offset, 0)
    items = items_from_rows(_slice(rows, offset, limit, max(every, 1)), origin)
    if not items:
        raise QuestionSetError(f"{source or SHIPPED}: no rows with a non-empty Question column.")
    return items


def _slice(rows: Any, offset: int, limit: int | None, every: int) -> list[Mapping[str, Any]]:
    indices = range(offset, len(rows), every)[:limit]
    if hasattr(rows, "select"):  # a datasets.Dataset: read only the rows used
        return list(rows.select(indices))
    return [rows[index] for index in indices]
