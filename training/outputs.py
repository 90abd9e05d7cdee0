"""What a finished run leaves in its output folder besides the adapter: training_summary.json, a model card
(README.md) saying how it was made and that it is not for clinical use, merged weights on request, and the upload
to the Hub (huggingface_hub)."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from medcot.config import is_embedded
from training.base_model import Base, Hardware
from training.data import TrainingData, is_local
from training.errors import TrainingError
from training.recipe import Recipe
from training.trainer import RunResult

SUMMARY = "training_summary.json"
MERGED = "merged"  # the folder --merge writes full weights into (MEDCOT_ADAPTER accepts it as merged weights)


def summary(
    command: str, base: Base, data: TrainingData, recipe: Recipe, hardware: Hardware, result: RunResult
) -> dict[str, Any]:
    import peft
    import torch
    import transformers
    import trl

    return {
        "command": command,
        "base_model": base.name,
        "data": data.summary(),
        "recipe": recipe.as_dict(),
        "hardware": {
            "device": hardware.device,
            "dtype": str(hardware.dtype).removeprefix("torch."),
            "optimizer": hardware.optimizer,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        },
        "steps": result.steps,
        "max_steps": result.max_steps,
        "resumed_from_step": result.resumed_from,
        "losses": result.losses,
        "final_loss": result.losses[-1]["loss"] if result.losses else None,
        "eval_loss": result.eval_loss,
        "seconds": round(result.seconds, 1),
        "tokens": result.tokens,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "peak_memory_mb": round(result.peak_memory_mb),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "trl": trl.__version__,
        },
    }


def name_base(output: Path, name: str) -> None:
    """adapter_config.json names the base as given ("embedded", a Hub id), not the cache folder it was read from.

    Written after saving: peft, saving with "embedded" as its base, looks that name up on the Hub and warns.
    """
    path = output / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_summary(output: Path, figures: dict[str, Any]) -> Path:
    path = output / SUMMARY
    path.write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _front_matter(figures: dict[str, Any]) -> str:
    base, source = figures["base_model"], figures["data"]["source"]
    lines = ["---", "library_name: peft", "pipeline_tag: text-generation"]
    if not is_embedded(base) and not Path(base).expanduser().exists():
        lines.append(f"base_model: {base}")
    if not is_local(source):
        lines += ["datasets:", f"  - {source.partition(':')[0]}"]
    lines += ["tags:", *(f"  - {tag}" for tag in ("medical", "chain-of-thought", "lora", "sft", "trl", "medcot"))]
    return "\n".join([*lines, "---", ""])


def model_card(figures: dict[str, Any]) -> str:
    recipe, data, hardware = figures["recipe"], figures["data"], figures["hardware"]
    loss = "n/a" if figures["final_loss"] is None else f"{figures['final_loss']:.4f}"
    if figures["eval_loss"] is not None:
        loss += f", held-out loss {figures['eval_loss']:.4f} on {data['eval_rows']} rows"
    rows = "\n".join(f"| `{key}` | `{value}` |" for key, value in recipe.items())
    counts = f"{data['rows_read']} rows read, {data['train_rows']} trained on, {data['eval_rows']} held out"
    run = f"{figures['steps']} of {figures['max_steps']} steps on {hardware['device']} ({hardware['dtype']}, "
    run += f"{hardware['optimizer']}) in {figures['seconds']} s, {figures['tokens_per_second']} tokens/s"
    return f"""{_front_matter(figures)}
# MedCoT LoRA adapter (trained with `python -m training`)

> **Not for clinical use.** A LoRA adapter over a 270M-parameter model for research on chain-of-thought answers:
> it hallucinates, follows no clinical guideline and is not a medical device. Do not use it for diagnosis or
> treatment decisions.

It answers the card's prompt (system and question turns of Medical-Diagnosis-COT-Gemma3-270M, rendered by the
MedCoT Space's `medcot.prompt`) with its reasoning in `<think>…</think>`, then the answer.

## How it was made

- Command: `{figures["command"]}`
- Base model: `{figures["base_model"]}`
- Data: `{data["source"]}`: {counts}, {data["rows_skipped_blank"]} skipped (blank fields)
- TRL `SFTTrainer` with peft LoRA; the loss on the answer only (`<think>` reasoning, answer and `<end_of_turn>`),
  the prompt tokens masked
- {run}, peak memory {figures["peak_memory_mb"]} MB; last training loss {loss}
- Versions: {", ".join(f"{name} {version}" for name, version in figures["versions"].items())}

| Recipe key | Value |
| --- | --- |
{rows}

All figures are in `training_summary.json`.

## Use it

In the MedCoT Space app or CLI: `MEDCOT_BASE_MODEL={figures["base_model"]} MEDCOT_ADAPTER=<this folder or repo>`
(tick *Compare with the base model* to see the base beside it). With vLLM: `--enable-lora --lora-modules
medcot=<this folder> --max-lora-rank {recipe["lora_r"]}` (at least the adapter's `r`, from `adapter_config.json`).
"""


def write_model_card(output: Path, figures: dict[str, Any]) -> Path:
    path = output / "README.md"
    path.write_text(model_card(figures), encoding="utf-8")
    return path


def merge(model: Any, tokenizer: Any, output: Path) -> Path:
    """Full weights with the adapter folded in, beside the adapter (the peft model is merged in place: call last)."""
    target = output / MERGED
    merged = model.merge_and_unload()
    merged.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def push_to_hub(output: Path, repo_id: str, token: str | None = None) -> str:
    """Upload the output folder (adapter, tokenizer, card, summary; no checkpoints) to the model repo ``repo_id``."""
    from huggingface_hub import HfApi

    api = HfApi(token=token or os.environ.get("HF_TOKEN") or None)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(output),
            repo_id=repo_id,
            repo_type="model",
            commit_message="Upload a MedCoT adapter trained with python -m training",
            ignore_patterns=["checkpoint-*", "checkpoint-*/**"],
        )
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"Could not push {output} to the Hub as {repo_id}: {text}") from None
    return str(getattr(commit, "commit_url", commit))
