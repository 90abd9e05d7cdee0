"""training.outputs: the summary and the model card of a run, merged weights the app serves, and the Hub upload
(only huggingface_hub's calls to the Hub replaced)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from huggingface_hub import HfApi

from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.request import Query
from tests.helpers.tiny import tiny_trainer, write_training_rows
from training.base_model import Base, pick_hardware
from training.data import load_data
from training.errors import TrainingError
from training.outputs import merge, model_card, push_to_hub, summary, write_model_card, write_summary
from training.recipe import load_recipe
from training.trainer import RunResult

GREEDY = GenerationParams(temperature=0, max_new_tokens=24)


def figures(base: str = "embedded", source: str = "FreedomIntelligence/medical-o1-reasoning-SFT:en") -> dict:
    data = load_data(str(write_training_rows(Path(tempfile.mkdtemp()) / "rows.jsonl")), eval_rows=2)
    data.source = source
    result = RunResult(4, 8, 12.5, 1000, [{"step": 1, "loss": 3.0}, {"step": 4, "loss": 2.25}], 2.5)
    return summary("python -m training --max-steps 8", Base(None, None, base, Path("/x")), data, load_recipe(),
                   pick_hardware(), result)  # fmt: skip


def test_summary_has_the_runs_figures() -> None:
    got = figures()
    assert got["data"] == {"source": got["data"]["source"], "rows_read": 12, "rows_skipped_blank": 0,
                           "train_rows": 10, "eval_rows": 2}  # fmt: skip
    assert (got["steps"], got["max_steps"], got["final_loss"], got["eval_loss"]) == (4, 8, 2.25, 2.5)
    assert (got["tokens"], got["tokens_per_second"], got["seconds"]) == (1000, 80.0, 12.5)
    assert got["recipe"]["lora_r"] == 128 and got["hardware"]["optimizer"] == "adamw_torch"
    assert {"torch", "transformers", "peft", "trl"} == set(got["versions"])


def test_model_card_says_how_it_was_made_and_not_for_clinical_use(tmp_path: Path) -> None:
    card = model_card(figures(base="google/gemma-3-270m-it"))
    assert "**Not for clinical use.**" in card
    assert "base_model: google/gemma-3-270m-it" in card and "  - FreedomIntelligence/medical-o1-reasoning-SFT" in card
    assert "python -m training --max-steps 8" in card and "last training loss 2.2500, held-out loss 2.5000" in card
    assert "--max-lora-rank 128" in card and "| `learning_rate` | `5e-05` |" in card
    local = model_card(figures(source="training/data/medcot-sample.jsonl"))  # embedded base, local data
    assert "base_model:" not in local and "datasets:" not in local and "MEDCOT_BASE_MODEL=embedded" in local
    write_summary(tmp_path, figures())
    write_model_card(tmp_path, figures())
    assert json.loads((tmp_path / "training_summary.json").read_text())["steps"] == 4
    assert (tmp_path / "README.md").read_text().startswith("---\nlibrary_name: peft\n")


@pytest.mark.slow
def test_merge_writes_weights_the_app_serves_as_merged(untrained_base: Path, tmp_path: Path) -> None:
    rows = write_training_rows(tmp_path / "rows.jsonl")
    output = tmp_path / "out"
    trainer, _, _ = tiny_trainer(untrained_base, rows, output, max_steps=1)
    trainer.train()
    trainer.save_model(str(output))
    adapter_engine = Engine(Settings(base_model=str(untrained_base), adapter=str(output), dtype="float32")).load()
    folder = merge(trainer.model, trainer.processing_class, output)
    merged_engine = Engine(Settings(base_model="/never/read", adapter=str(folder), dtype="float32")).load()
    assert merged_engine.ready, merged_engine.error
    assert merged_engine.loaded.kind == "merged"
    question = Query("Fever and neck stiffness in a child. Next step?", params=GREEDY)
    merged_answer, adapter_answer = merged_engine.ask(question), adapter_engine.ask(question)
    assert (merged_answer.reasoning, merged_answer.answer) == (adapter_answer.reasoning, adapter_answer.answer)
    ids = torch.tensor([adapter_engine.prepare(question).prompt.input_ids])
    with torch.inference_mode():
        torch.testing.assert_close(
            merged_engine.loaded.model(input_ids=ids).logits, adapter_engine.loaded.model(input_ids=ids).logits,
            atol=1e-4, rtol=1e-4,
        )  # fmt: skip


def test_push_uploads_the_folder_without_checkpoints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def create_repo(self: HfApi, repo_id: str, **kwargs: Any) -> str:
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return repo_id

    def upload_folder(self: HfApi, **kwargs: Any) -> Any:
        calls.append(("upload_folder", kwargs))
        return type("Commit", (), {"commit_url": "https://huggingface.co/me/adapter/commit/abc"})()

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "checkpoint-2").mkdir()
    assert push_to_hub(tmp_path, "me/adapter", token="hf_x") == "https://huggingface.co/me/adapter/commit/abc"
    assert calls[0] == ("create_repo", {"repo_id": "me/adapter", "repo_type": "model", "exist_ok": True})
    upload = calls[1][1]
    assert (upload["repo_id"], upload["folder_path"], upload["repo_type"]) == ("me/adapter", str(tmp_path), "model")
    assert "checkpoint-*" in upload["ignore_patterns"]


def test_a_failed_push_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self: HfApi, repo_id: str, **kwargs: Any) -> str:
        raise PermissionError("403 Forbidden: you cannot write to me/adapter\nmore detail")

    monkeypatch.setattr(HfApi, "create_repo", refused)
    with pytest.raises(TrainingError, match=r"Could not push .* as me/adapter: 403 Forbidden") as caught:
        push_to_hub(tmp_path, "me/adapter")
    assert "\n" not in str(caught.value)
