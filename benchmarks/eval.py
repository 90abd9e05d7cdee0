"""Answer quality, measured: a question set through the Engine, scored per model and prompt/decoding variant.

    python -m benchmarks.eval [--model embedded|adapter|base] [--variant default] [--questions FILE|HUB_ID]
                              [--out docs/eval/NAME.json] [--chart docs/eval/NAME.png]
    python -m benchmarks.eval --report docs/eval/a.json docs/eval/b.json --chart docs/eval/eval.png

Models: ``embedded`` (the PyPI Gemma 3 270M base, as offline), ``adapter`` (the configured MEDCOT_* model, by
default the card's adapter) and ``base`` (that model with the adapter switched off, the card's prompt). Variants
try how a base alone is prompted and decoded (``default`` is what a newcomer gets). Metrics: benchmarks/eval_metrics.
Each question is sampled with seed ``--seed + its index``, so a run repeats whatever runs before it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm
from transformers import set_seed

from benchmarks.eval_data import Item, QuestionSetError, load_questions
from benchmarks.eval_metrics import Scored, score, summarize
from benchmarks.eval_report import chart, read_runs, table
from medcot.config import EMBEDDED_MODEL, GenerationParams, Settings
from medcot.engine import Engine
from medcot.events import AnswerDelta, Finished, ReasoningDelta, ReasoningDone
from medcot.prompt_styles import BASE_DECODING, BASE_STOP_TEXTS, CARD, PRIMER_CHAT, PRIMER_TEXT, PromptStyle
from medcot.request import Query

MODELS = ("embedded", "adapter", "base")
CARD_SAMPLING = GenerationParams()  # the card's Quick Start: temperature 1.0, top-p 0.95, top-k 64


@dataclass(frozen=True)
class Variant:
    """A prompt style and decoding for a base model alone; None for either: the engine's own default."""

    description: str
    style: PromptStyle | None = None
    decoding: GenerationParams | None = None


VARIANTS: dict[str, Variant] = {
    "default": Variant("what a newcomer gets: the engine's prompt and decoding for this model"),
    "card": Variant("the card's prompt and sampling (the app before issue 16)", CARD, CARD_SAMPLING),
    "card-tuned": Variant(
        "the card's prompt, the primed base's decoding and stop texts",
        replace(CARD, stop_texts=BASE_STOP_TEXTS),
        BASE_DECODING,
    ),
    "primer-card-sampling": Variant(
        "plain-text primer, <think> prefilled, the card's sampling", PRIMER_TEXT, CARD_SAMPLING
    ),
    "primer": Variant("plain-text primer, <think> prefilled, tuned decoding", PRIMER_TEXT, BASE_DECODING),
    "primer-chat": Variant("chat-template primer, <think> prefilled, tuned decoding", PRIMER_CHAT, BASE_DECODING),
    "primer-no-prefill": Variant(
        "plain-text primer, nothing prefilled, tuned decoding", replace(PRIMER_TEXT, prefill=""), BASE_DECODING
    ),
    "primer-greedy": Variant(
        "plain-text primer, <think> prefilled, greedy with the repetition penalty",
        PRIMER_TEXT,
        replace(BASE_DECODING, temperature=0.0),
    ),
}


def settings_for(model: str) -> Settings:
    settings = Settings.from_env()
    if model == "embedded":
        return replace(settings, base_model=EMBEDDED_MODEL, adapter=None)
    return settings


def answer_one(
    engine: Engine, item: Item, params: GenerationParams, use_adapter: bool
) -> tuple[dict[str, Any], Scored]:
    """One question through the engine: its texts, stats and scores (an error is scored as an empty answer)."""
    reasoning: list[str] = []
    answer: list[str] = []
    saw = closed = False
    error = stats = None
    try:
        for event in engine.stream(Query(item.question, (), params, use_adapter)):
            if isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
                saw = True
            elif isinstance(event, ReasoningDone):
                saw, closed = True, not event.cut_off
            elif isinstance(event, AnswerDelta):
                answer.append(event.text)
            elif isinstance(event, Finished):
                stats = event.stats
    except Exception as exc:  # one bad row must not end a run of many
        error = f"{type(exc).__name__}: {exc}"
    scored: Scored = score(
        item.question,
        "".join(reasoning).strip(),
        "".join(answer).strip(),
        saw_reasoning=saw,
        reasoning_closed=closed,
        hit_token_limit=bool(stats and stats.hit_token_limit),
        closed_by_app=bool(stats and stats.reasoning_closed_by_app),
        new_tokens=stats.new_tokens if stats else 0,
        tokens_per_second=stats.tokens_per_second if stats else 0.0,
        reference=item.reference,
        accept=item.accept,
    )
    return {
        "question": item.question,
        "reference": item.reference,
        "reasoning": "".join(reasoning).strip(),
        "answer": "".join(answer).strip(),
        "error": error,
        "seconds": stats.seconds if stats else None,
        **scored.as_dict(),
    }, scored


def run_variant(
    engine: Engine, items: Sequence[Item], model: str, variant_name: str, seed: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """All items through one model and variant; the run's records, summary and everything needed to repeat it."""
    variant = VARIANTS[variant_name]
    use_adapter = model != "base"
    if model == "embedded" or engine.require_backend().base_alone:
        engine.base_style = variant.style
    elif variant.style is not None:
        raise SystemExit(f"variant {variant_name!r} changes a base model's prompt; {model} has an adapter.")
    params = variant.decoding or engine.generation_defaults()
    params = replace(params, **{name: value for name, value in overrides.items() if value is not None})
    style = engine.prompt_style(use_adapter)
    records, scores = [], []
    bar = tqdm(items, desc=f"{model}/{variant_name}", unit="q", file=sys.stderr)
    for index, item in enumerate(bar):
        set_seed(seed + index)
        record, scored = answer_one(engine, item, params, use_adapter)
        records.append(record)
        scores.append(scored)
        bar.set_postfix(usable=f"{sum(s.usable for s in scores)}/{len(scores)}")
    return {
        "model": model,
        "variant": variant_name,
        "description": variant.description,
        "loaded": engine.require_backend().describe(),
        "prompt_style": style.name,
        "prompt_label": style.label,
        "stop_texts": list(style.stop_texts),
        "decoding": asdict(params),
        "seed": seed,
        "summary": summarize(scores),
        "records": records,
    }


def machine() -> dict[str, Any]:
    import torch

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, action="append", help="repeatable; default: embedded")
    parser.add_argument("--variant", choices=sorted(VARIANTS), action="append", help="repeatable; default: default")
    parser.add_argument("--questions", help="a .jsonl/.json/.csv/.parquet file or a Hub dataset id (default: shipped)")
    parser.add_argument("--config", help="the Hub dataset's configuration, e.g. en")
    parser.add_argument("--split", default="train")
    parser.add_argument("--offset", type=int, default=0, help="first row (negative: from the end)")
    parser.add_argument("--every", type=int, default=1, help="every N-th row only (a spread-out sample)")
    parser.add_argument("--limit", type=int, help="at most this many rows")
    parser.add_argument("--max-new-tokens", type=int, help="default: the variant's (or the engine's) budget")
    parser.add_argument("--temperature", type=float, help="default: the variant's (0: greedy)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="JSON file (default: docs/eval/MODEL-VARIANT.json for one run)")
    parser.add_argument("--chart", type=Path, help="PNG chart of the runs side by side")
    parser.add_argument("--report", type=Path, nargs="+", help="only print the table (and chart) of stored runs")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.report:
        runs = read_runs(args.report)
    else:
        try:
            items = load_questions(args.questions, args.config, args.split, args.offset, args.limit, args.every)
        except QuestionSetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        runs = []
        engines: dict[str, Engine] = {}
        for model in args.model or ["embedded"]:
            key = "embedded" if model == "embedded" else "configured"  # adapter and base share one loaded model
            if key not in engines:
                engines[key] = Engine(settings_for(model)).load()
                if engines[key].error:
                    print(f"error: {engines[key].error}", file=sys.stderr)
                    return 1
            for variant in args.variant or ["default"]:
                started = time.monotonic()
                overrides = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
                run = run_variant(engines[key], items, model, variant, args.seed, overrides)
                run["seconds"] = round(time.monotonic() - started, 1)
                run["questions_source"] = args.questions or "shipped: benchmarks/data/questions.jsonl"
                runs.append(run)
        out = args.out or (Path("docs/eval") / f"{runs[0]['model']}-{runs[0]['variant']}.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine(), "runs": runs}, indent=2, ensure_ascii=False) + "\n")
        print(f"wrote {out}", file=sys.stderr)
    print(table(runs))
    if args.chart:
        chart(runs, args.chart)
        print(f"wrote {args.chart}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
