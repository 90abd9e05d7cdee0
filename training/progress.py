"""The training's progress bar (loss, tokens/s, ETA) and Ctrl-C: a checkpoint at the end of the step under way."""

from __future__ import annotations

import signal
import sys
import time
from types import FrameType
from typing import Any

from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments


class TrainingProgress(TrainerCallback):
    """One tqdm bar over the steps, with the latest loss and the tokens per second since the first step.

    Replaces transformers' ProgressCallback, which shows steps and ETA but prints the loss as dicts between bars;
    TRL counts the tokens (``num_tokens`` in its logs), this turns them into a rate.
    """

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self._first: tuple[float, float] | None = None  # (time, num_tokens) at the first log of this run
        self.tokens_per_second: float | None = None
        self._postfix: dict[str, str] = {}  # kept between logs: the final log carries no loss

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="Training", unit="step")

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **_: Any,
    ) -> None:
        logs = logs or {}
        now = time.monotonic()
        if "num_tokens" in logs:
            if self._first is None:
                self._first = (now, logs["num_tokens"])
            elif now > self._first[0]:
                self.tokens_per_second = (logs["num_tokens"] - self._first[1]) / (now - self._first[0])
        if "loss" in logs:
            self._postfix["loss"] = f"{logs['loss']:.3f}"
        if self.tokens_per_second is not None:
            self._postfix["tok/s"] = f"{self.tokens_per_second:.0f}"
        if self.bar is not None and self._postfix:
            self.bar.set_postfix(self._postfix, refresh=True)
        if "eval_loss" in logs:  # the log is stderr's, with the bar: stdout stays empty
            tqdm.write(f"eval loss: {logs['eval_loss']:.4f}", file=sys.stderr)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class StopOnInterrupt(TrainerCallback):
    """Ctrl-C ends the step under way, saves a checkpoint (weights, optimizer, scheduler, data position) and stops,
    so that ``--resume`` continues where it left off. A second Ctrl-C interrupts at once, saving nothing."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def install(self) -> None:
        self._previous = signal.signal(signal.SIGINT, self._handle)

    def uninstall(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nCtrl-C: saving a checkpoint after this step (Ctrl-C again to quit without it)", file=sys.stderr)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **_: Any) -> None:
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
