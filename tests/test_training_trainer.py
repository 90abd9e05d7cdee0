"""training.trainer and training.progress: TRL's SFTTrainer with LoRA learns, a held-out loss is reported, Ctrl-C
(a real SIGINT) leaves a checkpoint that a resumed run continues from its step."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from transformers import ProgressCallback, TrainerCallback

from tests.helpers.tiny import tiny_trainer, write_training_rows
from training.base_model import pick_hardware
from training.errors import TrainingError
from training.progress import StopOnInterrupt, TrainingProgress
from training.trainer import checkpoint_to_resume, run


@pytest.fixture
def rows(tmp_path: Path) -> Path:
    return write_training_rows(tmp_path / "rows.jsonl", repeats=4)  # 12 rows: the same three answers


def test_cpu_trains_in_float32_with_adamw_torch() -> None:
    hardware = pick_hardware()
    assert (hardware.device, str(hardware.dtype), hardware.optimizer) == ("cpu", "torch.float32", "adamw_torch")
    assert not hardware.bf16 and "float32" in hardware.why and "adamw_torch" in hardware.why
    with pytest.raises(TrainingError, match="adamw_8bit needs CUDA"):
        pick_hardware("adamw_8bit")


@pytest.mark.slow
def test_loss_falls_and_the_adapter_is_saved(untrained_base: Path, rows: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    trainer, interrupt, _ = tiny_trainer(untrained_base, rows, output, eval_rows=3, max_steps=12, save_steps=5)
    callbacks = trainer.callback_handler.callbacks
    assert any(isinstance(c, TrainingProgress) for c in callbacks)
    assert not any(type(c) is ProgressCallback for c in callbacks)  # one bar, ours
    result = run(trainer, interrupt, output, resume=False, device="cpu")
    losses = [entry["loss"] for entry in result.losses]
    assert result.steps == 12 and len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses  # the repeated answers are being learnt
    assert result.eval_loss is not None and result.eval_loss < losses[0]
    assert result.tokens > 0 and result.tokens_per_second > 0 and result.peak_memory_mb > 100
    config = json.loads((output / "adapter_config.json").read_text())
    assert config["r"] == 8 and set(config["target_modules"]) == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"
    }  # fmt: skip
    assert (output / "adapter_model.safetensors").is_file() and (output / "tokenizer.json").is_file()
    assert not list(output.glob("checkpoint-*"))  # a finished run leaves the adapter, not its checkpoints


class SigintAt(TrainerCallback):
    """Sends this process a real SIGINT (Ctrl-C) at the end of a step."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_that_resume_continues(untrained_base: Path, rows: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    trainer, interrupt, _ = tiny_trainer(untrained_base, rows, output, max_steps=8, save_steps=100)
    trainer.add_callback(SigintAt(3))
    stopped = run(trainer, interrupt, output, resume=False, device="cpu")
    assert stopped.interrupted and stopped.steps in (3, 4)  # the step under way ends first
    assert stopped.checkpoint == output / f"checkpoint-{stopped.steps}" and stopped.checkpoint.is_dir()
    assert checkpoint_to_resume(output) == stopped.checkpoint
    assert (stopped.checkpoint / "optimizer.pt").is_file() and (stopped.checkpoint / "trainer_state.json").is_file()
    assert not (output / "adapter_model.safetensors").exists()  # not finished: no final adapter yet
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is the user's again

    trainer, interrupt, _ = tiny_trainer(untrained_base, rows, output, max_steps=8, save_steps=100)
    resumed = run(trainer, interrupt, output, resume=True, device="cpu")
    assert not resumed.interrupted and resumed.resumed_from == stopped.steps and resumed.steps == 8
    steps = [entry["step"] for entry in resumed.losses]
    assert steps == list(range(1, 9))  # the checkpoint's log history, then this run's steps after it
    assert resumed.losses[: stopped.steps] == stopped.losses
    assert (output / "adapter_model.safetensors").is_file()


def test_a_second_ctrl_c_interrupts_at_once() -> None:
    interrupt = StopOnInterrupt()
    interrupt.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)  # the first asks for a checkpoint
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        interrupt.uninstall()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_resume_without_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no checkpoint-<step> folder"):
        checkpoint_to_resume(tmp_path)
