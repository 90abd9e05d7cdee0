"""Raw `model.generate` against the same model served by the app, in interleaved rounds; cold start."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import TextStreamer

from benchmarks.app_process import AppProcess
from benchmarks.bench_cpu import TokenClock
from benchmarks.client import serve_once, serve_when_ready, timed_client
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.generation import sampling_kwargs
from medcot.model.loading import LoadedModel
from medcot.prompt import stop_token_ids
from medcot.request import Query

# The app coalesces streamed updates to one per 100 ms (medcot.ui.streaming.UPDATE_INTERVAL_S): a decode rate taken
# over a shorter span than a few of those says more about the coalescing than about the model.
_MIN_APP_SPAN_S = 0.25


def measure_raw(loaded: LoadedModel, prompt: Sequence[int], new_tokens: int) -> dict[str, Any]:
    """Greedy model.generate with the app's generation arguments: per-token times and the tokens."""
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    clock = TokenClock()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    arguments = sampling_kwargs(GenerationParams(max_new_tokens=new_tokens, temperature=0.0))
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            streamer=clock,
            eos_token_id=stop_token_ids(tokenizer, model),
            pad_token_id=pad,
            **arguments,
        )
    times = clock.times[1:]  # the first call to the streamer carries the prompt
    return {"start": start, "token_times": times, "tokens": out[0, len(prompt) :].tolist()}


class _TextMarks(TextStreamer):
    """Replays generated tokens through transformers' streamer: (tokens so far, text shown so far) per chunk."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.count = 0
        self.text = ""
        self.marks: list[tuple[int, str]] = []

    def put(self, value: torch.Tensor) -> None:
        self.count += int(value.numel())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        if text:
            self.marks.append((self.count, self.text))


def _letters(text: str) -> int:
    return len("".join(text.split()))


def tokens_behind_text(tokenizer: Any, tokens: Sequence[int], shown: str) -> int:
    """How many generated tokens the app had made when it showed `shown` (its first text), from the same tokens.

    The app's streamer shows text in chunks (and holds back what may start a tag or a stop marker); the first
    chunk that holds at least as much text as `shown` marks the token count. Whitespace is not compared: the
    app strips it at the edges.
    """
    marks = _TextMarks(tokenizer)
    for token in tokens:
        marks.put(torch.tensor([token]))
    marks.end()
    wanted = _letters(shown)
    return next((count for count, text in marks.marks if _letters(text) >= wanted), len(tokens))


def _rate(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if tokens > 0 and seconds > 0 else None


def comparerounded(loaded: LoadedModel, raw: dict[str, Any], app: dict[str, Any]) -> dict[str, Any]:
    """The figures of one raw run and the app run that followed it."""
    times, tokens = raw["token_times"], raw["tokens"]
    raw_ttft = times[0] - raw["start"]
    raw_rate = _rate(len(times) - 1, times[-1] - times[0])
    app_tokens = app["tokens"] if app["tokens"] is not None else len(tokens)
    shown_at = tokens_behind_text(loaded.tokenizer, tokens, app["first_text"]) if app["first_text_at"] else None
    app_ttft = app["first_text_at"] - app["sent"] if app["first_text_at"] else None
    app_rate = None
    if shown_at is not None and app["finished_at"] - app["first_text_at"] >= _MIN_APP_SPAN_S:
        app_rate = _rate(app_tokens - shown_at, app["finished_at"] - app["first_text_at"])
    raw_text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
    return {
        "raw_ttft_s": raw_ttft,
        "raw_tok_s": raw_rate,
        "raw_tokens": len(tokens),
        # When the raw run had made as many tokens as the app's first update shows: the streamer's share of TTFT.
        "raw_first_text_s": times[min(shown_at, len(times)) - 1] - raw["start"] if shown_at else None,
        "app_ttft_s": app_ttft,
        # The same as gradio_client hands it to the caller, after up to 50 ms in its message queue.
        "app_ttft_handed_s": app["first_text_handed_at"] - app["sent"] if app["first_text_handed_at"] else None,
        # The reply's first (empty) update: the request's way through HTTP and Gradio's queue and back.
        "app_first_update_s": app["first_update_at"] - app["sent"] if app["first_update_at"] else None,
        "app_tok_s": app_rate,
        "app_tokens": app_tokens,
        "app_tokens_at_first_update": shown_at,
        "app_updates": app["updates"],
        "app_server_ttft_s": app["server_ttft_s"],
        "app_server_tok_s": app["server_tok_s"],
        "app_total_s": app["finished_at"] - app["sent"],
        "raw_total_s": times[-1] - raw["start"],
        "same_tokens": app_tokens == len(tokens),
        # The app may end earlier (stop texts) but never shows other text than the model made.
        "same_text": " ".join(raw_text.split()).startswith(" ".join(app["text"].split())),
    }


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def round_to(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def app_prompt(settings: Settings, loaded: LoadedModel, question: str) -> list[int]:
    """The prompt the app builds for `question` with these settings: the card's, or for a base model alone its
    prompt style's (the embedded base's worked-example primer, several times longer). The raw side must decode
    after the same tokens, or the comparison measures the prompts' lengths instead of the app."""
    query = Query(question, params=GenerationParams(temperature=0.0))
    return Engine(settings, loaded).prepare(query).prompt.input_ids


def app_vs_raw(
    settings: Settings,
    loaded: LoadedModel,
    url: str,
    question: str,
    new_tokens: int,
    rounds: int,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Interleaved rounds (raw, then the app; never both at once) after one warm-up of each; medians.
    `settings` are the app's: the raw side decodes after the prompt they give the app."""
    client = timed_client(url)
    prompt = app_prompt(settings, loaded, question)
    measure_raw(loaded, prompt, new_tokens)  # warm-up: first-call allocations on both sides
    serve_once(client, question, new_tokens)
    samples = []
    for index in range(rounds):
        raw = measure_raw(loaded, prompt, new_tokens)
        app = serve_once(client, question, new_tokens)
        sample = comparerounded(loaded, raw, app)
        samples.append(sample)
        report(
            f"round {index + 1}/{rounds}: raw {sample['raw_tok_s'] or 0:.1f} tok/s,"
            f" TTFT {sample['raw_ttft_s'] * 1e3:.0f} ms | app {sample['app_tok_s'] or 0:.1f} tok/s,"
            f" TTFT {(sample['app_ttft_s'] or 0) * 1e3:.0f} ms"
            f" ({sample['app_tokens']} tokens, {sample['app_updates']} updates)"
        )
    ratios = [s["app_tok_s"] / s["raw_tok_s"] for s in samples if s["app_tok_s"] and s["raw_tok_s"]]
    ttft_diffs = [s["app_ttft_s"] - s["raw_ttft_s"] for s in samples if s["app_ttft_s"] is not None]
    summary = {
        "raw_tok_s": round_to(median([s["raw_tok_s"] for s in samples]), 1),
        "app_tok_s": round_to(median([s["app_tok_s"] for s in samples]), 1),
        "tok_s_ratio": round_to(median(ratios), 3),
        "raw_ttft_ms": round_to(median([s["raw_ttft_s"] * 1e3 for s in samples]), 1),
        "app_ttft_ms": round_to(median([s["app_ttft_s"] and s["app_ttft_s"] * 1e3 for s in samples]), 1),
        "ttft_diff_ms": round_to(median([d * 1e3 for d in ttft_diffs]), 1),
        "app_ttft_handed_ms": round_to(
            median([s["app_ttft_handed_s"] and s["app_ttft_handed_s"] * 1e3 for s in samples]), 1
        ),
        "raw_first_text_ms": round_to(
            median([s["raw_first_text_s"] and s["raw_first_text_s"] * 1e3 for s in samples]), 1
        ),
        "app_server_ttft_ms": round_to(
            median([s["app_server_ttft_s"] and s["app_server_ttft_s"] * 1e3 for s in samples]), 1
        ),
        "app_server_tok_s": round_to(median([s["app_server_tok_s"] for s in samples]), 1),
        "app_first_update_ms": round_to(
            median([s["app_first_update_s"] and s["app_first_update_s"] * 1e3 for s in samples]), 1
        ),
        "tokens": samples[-1]["app_tokens"] if samples else None,
        "same_tokens": all(s["same_tokens"] for s in samples),
        "same_text": all(s["same_text"] for s in samples),
    }
    rounded = [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in samples]
    return {
        "question": question,
        "prompt_tokens": len(prompt),
        "new_tokens": new_tokens,
        "rounds": rounds,
        **summary,
        "samples": rounded,
    }


# -- cold start --------------------------------------------------------------------------------------------------
def measure_start(app: AppProcess, question: str, new_tokens: int) -> dict[str, Any]:
    """Seconds from the start of a just started app process to listening, to its model taking requests and to its
    first served token; its memory once that first answer is complete."""
    listening = app.wait_until_listening()
    client = timed_client(app.url)
    served = serve_when_ready(client, question, new_tokens, app)
    return {
        "listening_s": round(listening, 2),
        "model_ready_s": round(served["sent"] - app.started, 2),  # the request that was not refused was sent here
        "first_token_s": round(served["first_text_at"] - app.started, 2) if served["first_text_at"] else None,
        "answered_s": round(served["finished_at"] - app.started, 2),
        **app.memory(),
    }
