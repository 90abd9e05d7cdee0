"""TRL's SFTTrainer over the tokenized rows: LoRA (peft) on the recipe's projections, the loss on the answer only,
checkpoints to resume from, and the run's figures."""

from __future__ import annotations

import contextlib
import resource
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import ProgressCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer

from training.base_model import Base, Hardware
from training.errors import TrainingError
from training.progress import StopOnInterrupt, TrainingProgress
from training.recipe import Recipe


@dataclass
class RunResult:
    steps: int  # the global step reached
    max_steps: int
    seconds: float  # this run's training time (a resumed run: since the resume)
    tokens: int  # tokens trained on in this run (prompt and answer, no padding: TRL's count)
    losses: list[dict[str, float]] = field(default_factory=list)  # {"step", "loss"} per log
    eval_loss: float | None = None
    interrupted: bool = False
    checkpoint: Path | None = None
    resumed_from: int | None = None  # the step of the checkpoint this run continued
    peak_memory_mb: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


def lora_config(recipe: Recipe) -> LoraConfig:
    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=list(recipe.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(recipe: Recipe, output: Path, hardware: Hardware, evaluating: bool) -> SFTConfig:
    with warnings.catch_warnings():
        # SFTConfig turns gradient checkpointing on by default, under the name transformers 5 deprecates: TRL's to
        # change, and nothing a user of this command can act on.
        warnings.filterwarnings("ignore", "`gradient_checkpointing` is deprecated", FutureWarning)
        return _sft_config(recipe, output, hardware, evaluating)


def _sft_config(recipe: Recipe, output: Path, hardware: Hardware, evaluating: bool) -> SFTConfig:
    return SFTConfig(
        output_dir=str(output),
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_steps,
        weight_decay=recipe.weight_decay,
        seed=recipe.seed,
        max_length=recipe.max_length,
        optim=hardware.optimizer,
        bf16=hardware.bf16,  # SFTConfig's default is True, which CPU float32 training must not get
        use_cpu=hardware.device == "cpu",
        completion_only_loss=True,  # the rows come tokenized: TRL then needs telling to read completion_mask
        logging_steps=recipe.logging_steps,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=1,
        eval_strategy="no",  # the held-out loss is measured once, at the end (evaluate below)
        do_eval=evaluating,
        report_to="none",
        dataloader_num_workers=0,
    )


def build_trainer(
    base: Base, recipe: Recipe, train: Any, held_out: Any | None, output: Path, hardware: Hardware
) -> tuple[SFTTrainer, TrainingProgress, StopOnInterrupt]:
    progress, interrupt = TrainingProgress(), StopOnInterrupt()
    with warnings.catch_warnings():
        # peft reads model.is_gradient_checkpointing, deprecated by transformers 5: peft's to change (as in the app).
        warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
        trainer = SFTTrainer(
            model=base.model,
            args=sft_config(recipe, output, hardware, held_out is not None),
            train_dataset=train,
            eval_dataset=held_out,
            processing_class=base.tokenizer,
            peft_config=lora_config(recipe),
            callbacks=[progress, interrupt],
        )
    trainer.remove_callback(ProgressCallback)  # TrainingProgress shows the steps, with loss and tokens/s
    return trainer, progress, interrupt


def checkpoint_to_resume(output: Path) -> Path:
    last = get_last_checkpoint(str(output)) if output.is_dir() else None
    if last is None:
        raise TrainingError(f"--resume: no checkpoint-<step> folder in {output} holds a saved state to continue.")
    return Path(last)


def peak_memory_mb(device: str) -> float:
    """Peak resident memory of this process (Linux reports KiB), or CUDA's peak allocation on a GPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(trainer: SFTTrainer, interrupt: StopOnInterrupt, output: Path, resume: bool, device: str) -> RunResult:
    """Train (from the last checkpoint when resuming); Ctrl-C leaves a checkpoint; the adapter is saved at the end."""
    checkpoint = checkpoint_to_resume(output) if resume else None
    # TRL's running count of the tokens trained on (what it logs as num_tokens); read directly, as the logs hold it
    # only every logging_steps.
    tokens_before = getattr(trainer, "_total_train_tokens", 0)
    interrupt.install()
    started = time.monotonic()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        interrupt.uninstall()
    seconds = time.monotonic() - started
    state = trainer.state
    result = RunResult(
        steps=state.global_step,
        max_steps=state.max_steps,
        seconds=seconds,
        tokens=int(getattr(trainer, "_total_train_tokens", 0) - tokens_before),
        losses=[{"step": log["step"], "loss": log["loss"]} for log in state.log_history if "loss" in log],
        interrupted=interrupt.requested,
        resumed_from=int(checkpoint.name.split("-")[-1]) if checkpoint else None,
    )
    if result.interrupted:
        result.checkpoint = output / f"checkpoint-{state.global_step}"
    else:
        if trainer.eval_dataset is not None:
            result.eval_loss = trainer.evaluate()["eval_loss"]
        trainer.save_model(str(output))  # adapter_config.json, adapter_model.safetensors, the tokenizer
        for folder in output.glob("checkpoint-*"):  # a finished run needs none; its adapter is the output
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)
    result.peak_memory_mb = peak_memory_mb(device)
    return result
