"""Token streaming with transformers' streamer and stopping criteria, cancellable per request."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from medcot.chunks import Chunk, StopTextFilter
from medcot.config import GenerationParams
from medcot.errors import GenerationError
from medcot.prompt import stop_token_ids
from medcot.sampling import TopKSampler
from medcot.static_generation import StaticGenerator

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# A thread told to stop ends after the token in flight; waiting longer means something is wrong.
_JOIN_TIMEOUT_S = 30.0


class CancelCriteria(StoppingCriteria):
    """Stops generate() at the next token once any of the request's events is set."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        stop = any(event.is_set() for event in self.events)
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class StopTextCriteria(StoppingCriteria):
    """Stops a sequence once its generated text (never the prompt) contains one of ``texts``.

    transformers' StopStringCriteria (``stop_strings``) preprocesses Gemma's 262k-token vocabulary for 6.0 s per
    request (docs/benchmark.md). Here only a tail of ``len(text) + 1`` tokens is decoded, enough for a marker the
    newest token completed, as each of its tokens carries at least one of its characters.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_length: int, texts: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length
        self.texts = tuple(texts)
        self.window = max((len(text) for text in self.texts), default=0) + 1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        start = max(self.prompt_length, input_ids.shape[1] - self.window)
        tails = self.tokenizer.batch_decode(input_ids[:, start:].tolist(), skip_special_tokens=True)
        stop = [any(text in tail for text in self.texts) for tail in tails]
        return torch.tensor(stop, dtype=torch.bool, device=input_ids.device)


class _CountingStreamer(TextIteratorStreamer):
    """TextIteratorStreamer whose items carry the tokens generated so far, counted in the generation thread
    when the text is finalized (a counter read from the consumer's thread would race ahead of the queue)."""

    tokens = 0  # set on the instance by the first count

    def put(self, value: torch.Tensor) -> None:
        if not (self.skip_prompt and self.next_tokens_are_prompt):
            self.tokens += int(value.numel())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text_queue.put(Chunk(text, self.tokens), timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)


def sampling_kwargs(params: GenerationParams) -> dict[str, Any]:
    """generate() arguments; temperature 0 is greedy. A top-k (the card's 64) samples with TopKSampler, as fast as
    greedy; only top-k 0 samples over the whole vocabulary with generate's own sampling."""
    kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens}
    if params.repetition_penalty != 1.0:
        kwargs["repetition_penalty"] = params.repetition_penalty
    if params.temperature <= 0:
        kwargs["do_sample"] = False
    elif params.top_k > 0:
        sampler = TopKSampler(params.top_k, temperature=params.temperature, top_p=params.top_p)
        kwargs.update(do_sample=False, logits_processor=LogitsProcessorList([sampler]))
    else:
        kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
    return kwargs


def stream_generate(
    model: PreTrainedModel | PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: list[int],
    params: GenerationParams,
    cancel: threading.Event | None = None,
    *,
    stop_texts: Sequence[str],
    static: StaticGenerator | None = None,
    **generate_kwargs: Any,
) -> Iterator[Chunk]:
    """Yield decoded text chunks as the model produces them (a last one with no text may carry the final count).

    Closing the iterator or setting ``cancel`` stops generate() at its next token and joins its thread; its
    exception is re-raised as GenerationError. Generation ends where the model starts one of ``stop_texts`` (never
    yielded). With ``static``, tokens come from its decode step wherever that runs these arguments as generate() would.
    """
    closed = threading.Event()  # set when this iterator ends for any reason; ``cancel`` stays the caller's
    streamer = _CountingStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure: list[BaseException] = []
    ids = torch.tensor([input_ids], dtype=torch.long, device=model.device)
    sampling = sampling_kwargs(params)
    if "logits_processor" in generate_kwargs and "logits_processor" in sampling:  # the sampler must come last
        processors = [*generate_kwargs.pop("logits_processor"), *sampling["logits_processor"]]
        sampling["logits_processor"] = LogitsProcessorList(processors)
    criteria: list[StoppingCriteria] = [CancelCriteria(closed, *([cancel] if cancel else []))]
    if stop_texts:
        criteria.append(StopTextCriteria(tokenizer, len(input_ids), stop_texts))
    kwargs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "streamer": streamer,
        "stopping_criteria": StoppingCriteriaList(criteria),
        "eos_token_id": stop_token_ids(tokenizer, model),
        "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        **sampling,
        **generate_kwargs,
    }

    generate = model.generate
    if static is not None:
        refusal = static.refusal(kwargs)
        if refusal is None:
            generate = static.generate
        else:
            log.info("%s needs transformers' generate(); the static decode step is not used", refusal)

    def run() -> None:
        try:
            with torch.inference_mode():
                generate(**kwargs)
        except BaseException as exc:  # surfaced in the caller's thread below
            failure.append(exc)
        finally:
            streamer.end()  # unblocks the consumer even when generate() failed before its own end()

    thread = threading.Thread(target=run, name="medcot-generate", daemon=True)
    started = time.monotonic()
    thread.start()
    shown = StopTextFilter(stop_texts)
    try:
        counted = 0
        for chunk in streamer:
            text = shown.feed(chunk.text)  # empty while a possible marker is held, and after a stop text
            if text:
                counted = chunk.tokens
                yield Chunk(text, chunk.tokens)
        if text := shown.close():
            counted = streamer.tokens
            yield Chunk(text, streamer.tokens)
        if failure:
            raise GenerationError(f"Generation failed: {failure[0]}") from failure[0]
        if streamer.tokens > counted:  # trailing tokens that print nothing (the EOS after a newline) still count
            yield Chunk("", streamer.tokens)
    finally:
        closed.set()
        thread.join(_JOIN_TIMEOUT_S)
        if thread.is_alive():
            log.error("generation thread still running %.1f s after cancel", time.monotonic() - started)
