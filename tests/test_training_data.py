"""training.data: local files of every kind and Hub ids through `datasets`, the columns checked, blank rows dropped,
a seeded held-out slice; and the shipped sample."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from training.data import COLUMNS, SAMPLE, is_local, load_data
from training.errors import TrainingError

ROWS = [
    {"Question": f"Question {n}?", "Complex_CoT": f"Reasoning {n}.", "Response": f"Answer {n}."} for n in range(10)
]


def write(path: Path, rows: list[dict[str, object]]) -> Path:
    import pandas as pd

    frame = pd.DataFrame(rows)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows))
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_files_of_each_kind(tmp_path: Path, suffix: str) -> None:
    data = load_data(str(write(tmp_path / f"rows{suffix}", ROWS)))
    assert data.train.column_names == list(COLUMNS)
    assert sorted(data.train["Question"]) == sorted(row["Question"] for row in ROWS)
    assert data.summary() == {
        "source": str(tmp_path / f"rows{suffix}"),
        "rows_read": 10,
        "rows_skipped_blank": 0,
        "train_rows": 10,
        "eval_rows": 0,
    }


def test_blank_rows_are_skipped_and_counted(tmp_path: Path) -> None:
    rows = [*ROWS, {"Question": "  ", "Complex_CoT": "x", "Response": "y"}, {**ROWS[0], "Response": ""}]
    data = load_data(str(write(tmp_path / "rows.jsonl", rows)))
    assert (data.rows_read, data.rows_skipped, len(data.train)) == (12, 2, 10)


def test_eval_rows_are_a_seeded_disjoint_slice(tmp_path: Path) -> None:
    path = str(write(tmp_path / "rows.jsonl", ROWS))
    first, again, other = (load_data(path, eval_rows=3, seed=seed) for seed in (1, 1, 2))
    assert len(first.eval) == 3 and len(first.train) == 7
    assert not set(first.eval["Question"]) & set(first.train["Question"])
    assert first.eval["Question"] == again.eval["Question"]  # the same seed holds out the same rows
    assert {*first.eval["Question"]} != {*other.eval["Question"]} or first.train["Question"] != other.train["Question"]
    assert first.summary()["eval_rows"] == 3 and first.summary()["rows_skipped_blank"] == 0


def test_the_shipped_sample() -> None:
    data = load_data(str(SAMPLE))
    assert 24 <= len(data.train) <= 40 and data.rows_skipped == 0
    lines = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    assert all("written for the MedCoT Space project" in row["source"] for row in lines)
    assert all("not medical advice" in row["source"] for row in lines)
    assert "Not medical advice" in (SAMPLE.parent / "README.md").read_text()


@pytest.mark.parametrize(
    ("source", "local"),
    [
        ("FreedomIntelligence/medical-o1-reasoning-SFT", False),
        ("FreedomIntelligence/medical-o1-reasoning-SFT:en", False),
        ("rows.jsonl", True),
        ("data/rows.csv", True),
        ("./owner/name", True),
        ("/abs/rows.parquet", True),
    ],
)
def test_hub_ids_and_paths_are_told_apart(source: str, local: bool) -> None:
    assert is_local(source) is local


def test_bad_data_is_one_readable_line(tmp_path: Path) -> None:
    cases = {
        str(tmp_path / "missing.jsonl"): "does not exist",
        str(write(tmp_path / "cols.jsonl", [{"Question": "q", "Answer": "a"}])): "lacks the columns Complex_CoT, "
        "Response: training needs Question, Complex_CoT, Response (it has Question, Answer)",
        str(write(tmp_path / "blank.jsonl", [{**ROWS[0], "Complex_CoT": " "}])): "no rows with a non-blank",
        str(tmp_path / "rows.txt"): "does not exist",
    }
    (tmp_path / "rows.xml").write_text("<rows/>")
    cases[str(tmp_path / "rows.xml")] = "unknown file type"
    (tmp_path / "broken.jsonl").write_text('{"Question": "q",\n')
    cases[str(tmp_path / "broken.jsonl")] = "cannot be read as .jsonl"
    for source, message in cases.items():
        with pytest.raises(TrainingError, match=re.escape(message)) as caught:
            load_data(source)
        assert "\n" not in str(caught.value), source


def test_eval_rows_out_of_range(tmp_path: Path) -> None:
    path = str(write(tmp_path / "rows.jsonl", ROWS))
    for bad in (-1, 10, 11):
        with pytest.raises(TrainingError, match=f"--eval-rows must be between 0 and 9 .*got {bad}"):
            load_data(path, eval_rows=bad)


def test_an_unreachable_hub_dataset_is_one_line() -> None:
    # HF_HUB_OFFLINE=1 (conftest) and nothing cached: the real `datasets` error, in one line.
    with pytest.raises(TrainingError, match=r"Could not load the dataset nobody/nothing:en \(split train\)") as caught:
        load_data("nobody/nothing:en")
    assert "\n" not in str(caught.value)
