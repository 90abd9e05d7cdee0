"""Terminal client: reasoning dimmed on stderr, the answer on stdout."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TextIO

from medcot import DISCLAIMER
from medcot.backends import settings_from_env
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.errors import InputError, UserError
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone, Stats
from medcot.model.progress import ProgressLines
from medcot.request import Query, clean_question

DIM, RESET = "\x1b[2m", "\x1b[0m"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m medcot",
        description=f"Ask Medical-Diagnosis-COT-Gemma3-270M a question. {DISCLAIMER}",
    )
    parser.add_argument("question", nargs="?", help="the question (read from stdin when left out)")
    parser.add_argument("--no-reasoning", action="store_true", help="do not print the reasoning")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: MEDCOT_MAX_NEW_TOKENS or 512")
    # Decoding left unset takes the model's defaults: the card's sampling, or the primed base's (medcot.prompt_styles).
    parser.add_argument("--temperature", type=float, help="0 for greedy; default: the model's")
    parser.add_argument("--top-p", type=float)
    parser.add_argument("--top-k", type=int)
    parser.add_argument("--repetition-penalty", type=float)
    parser.add_argument("--base-model", help="overrides MEDCOT_BASE_MODEL (hub id, local folder or 'embedded')")
    parser.add_argument("--adapter", help="overrides MEDCOT_ADAPTER (hub id or local folder; '' for none)")
    parser.add_argument("--stats", action="store_true", help="print generation stats to stderr at the end")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    settings = settings_from_env()
    if args.base_model is not None:
        settings = replace(settings, base_model=args.base_model)
    if args.adapter is not None:
        settings = replace(settings, adapter=args.adapter or None)
    if settings.backend is None and settings.decode == "auto":
        from medcot.model.loading import pick_device  # local models only: server mode loads no weights

        if pick_device(settings) == "cpu":
            # One question: compiling the step cannot pay for itself, and its tracing holds the GIL each eager op
            # needs (first token 4.6 s after the load, 0.35 s without). MEDCOT_DECODE=compiled still compiles.
            settings = replace(settings, decode="static")
    return settings


def _params(args: argparse.Namespace, defaults: GenerationParams) -> GenerationParams:
    """The decoding asked for on the command line, the model's defaults where nothing was asked."""
    asked = {name: getattr(args, name) for name in GenerationParams.LIMITS if getattr(args, name) is not None}
    return replace(defaults, **asked)


def run(args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO, engine: Engine | None = None) -> int:
    try:
        question = clean_question(args.question if args.question is not None else stdin.read())  # before loading
    except UnicodeDecodeError:
        raise InputError("The question on standard input is not valid UTF-8 text.") from None
    dim = stderr.isatty() and "NO_COLOR" not in os.environ
    engine = engine or Engine(_settings(args))
    if not engine.ready:
        engine.load(on_progress=ProgressLines(stderr))
    params = _params(args, engine.generation_defaults())
    for note in engine.require_backend().notes:
        print(f"note: {note}", file=stderr)
    style = engine.prompt_style()
    if style.primed:
        print(f"note: prompt: {style.label}.", file=stderr)
    wrote_answer = False
    for event in engine.stream(Query(question, (), params)):
        if isinstance(event, ReasoningDelta) and not args.no_reasoning:
            stderr.write(f"{DIM}{event.text}{RESET}" if dim else event.text)
            stderr.flush()
        elif isinstance(event, ReasoningDone) and not args.no_reasoning:
            label = "reasoning cut off by the token limit" if event.cut_off else f"thought for {event.duration:.1f} s"
            stderr.write(f"\n[{label}]\n")
        elif isinstance(event, AnswerDelta):
            stdout.write(event.text.lstrip() if not wrote_answer else event.text)
            stdout.flush()
            wrote_answer = True
        elif isinstance(event, Finished):
            if note := _ending_note(event.stats, wrote_answer):
                print(note, file=stderr)
            if args.stats:
                s = event.stats
                print(
                    f"[{s.new_tokens} tokens ({s.reasoning_tokens} reasoning, {s.answer_tokens} answer), "
                    f"{s.tokens_per_second:.1f} tok/s, first token after {s.time_to_first_token or 0:.2f} s]",
                    file=stderr,
                )
    stdout.write("\n")
    return 0


def _ending_note(stats: Stats, wrote_answer: bool) -> str | None:
    """Why the answer ended short, when it did (a cut-off reasoning has its own note, printed after it)."""
    if stats.hit_token_limit and not stats.reasoning_cut_off and wrote_answer:
        return f"[answer cut off by the token limit ({stats.new_tokens} tokens); raise --max-new-tokens]"
    if not wrote_answer and not stats.reasoning_cut_off and not stats.stopped:
        return "[the model returned no answer]"
    return None


def main(argv: Sequence[str] | None = None, engine: Engine | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args, sys.stdin, sys.stdout, sys.stderr, engine)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
