"""generate()'s greedy loop over the static decode step (medcot.model.static_decode), for stream_generate.

StaticGenerator.generate takes stream_generate's generate() arguments (streamer, stopping criteria, the card's
TopKSampler as a logits processor, EOS ids) and runs them as GenerationMixin._sample does for one sequence. What it
cannot run the same way it reports, and stream_generate calls model.generate instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor, StoppingCriteriaList

from medcot.config import default_cache_dir
from medcot.model.long_rows import argmax
from medcot.model.lora_delta import LoraDelta
from medcot.model.static_decode import StaticDecoder
from medcot.model.step_rows import COMPILED_ROWS

log = logging.getLogger(__name__)

# generate() arguments this loop runs as generate does; any other sends the request to model.generate.
_HANDLED = {
    "input_ids",
    "attention_mask",
    "streamer",
    "stopping_criteria",
    "logits_processor",
    "eos_token_id",
    "pad_token_id",
    "max_new_tokens",
    "do_sample",
    "repetition_penalty",
}
# generation_config fields that add processors to greedy decoding in generate(), at their neutral values.
_NEUTRAL_CONFIG = {
    "repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0),
    "min_length": (None, 0),
    "min_new_tokens": (None, 0),
    "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,),
    "bad_words_ids": (None,),
    "sequence_bias": (None,),
    "forced_bos_token_id": (None,),
    "forced_eos_token_id": (None,),
    "encoder_repetition_penalty": (None, 1.0),
    "exponential_decay_length_penalty": (None,),
}


class StaticGenerator:
    """Generation through a StaticDecoder; ``step`` may be swapped for a compiled one (compiled_step.py)."""

    def __init__(self, decoder: StaticDecoder) -> None:
        self.decoder = decoder
        self.step: Callable[[torch.Tensor, torch.Tensor, Any, bool], torch.Tensor] = decoder.step
        self.mode = "static"  # what the status and the logs call this path; "compiled" once a compiled step is in
        self.compiled: Any = None  # the CompiledStep being built, when MEDCOT_DECODE=compiled

    def refusal(self, kwargs: dict[str, Any]) -> str | None:
        """Why these generate() arguments need model.generate (None: this loop runs them as generate would)."""
        unknown = sorted(set(kwargs) - _HANDLED)
        if unknown:
            return f"arguments {', '.join(unknown)}"
        if kwargs.get("do_sample"):
            return "generate's own sampling (top-k 0)"
        if kwargs["input_ids"].shape[0] != 1:
            return "a batch"
        config = self.decoder.model.generation_config
        for name, neutral in _NEUTRAL_CONFIG.items():
            if getattr(config, name, None) not in neutral:
                return f"the generation config's {name}"
        return None

    def generate(self, **kwargs: Any) -> torch.Tensor:
        """What model.generate(**kwargs) returns for one sequence, greedy over the processed scores. While the
        adapter switch has the merged adapter's delta attached (a base-model answer), the step subtracts it too."""
        base = self.decoder.base_wanted()
        ids: torch.Tensor = kwargs["input_ids"]
        streamer = kwargs.get("streamer")
        processors = LogitsProcessorList()
        if kwargs.get("repetition_penalty", 1.0) != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(kwargs["repetition_penalty"]))
        processors.extend(kwargs.get("logits_processor") or [])
        stopping = kwargs.get("stopping_criteria") or StoppingCriteriaList()
        eos = kwargs.get("eos_token_id")
        eos_ids = torch.tensor([] if eos is None else eos, dtype=torch.long, device=ids.device).reshape(-1)
        new_tokens = int(kwargs.get("max_new_tokens", 20))
        if streamer is not None:
            streamer.put(ids.cpu())
        cache = self.decoder.new_cache(ids.shape[1] + new_tokens)
        logits = self.decoder.prefill(ids[0], cache, base)
        position = torch.tensor([ids.shape[1]], device=ids.device)
        for made in range(1, new_tokens + 1):
            scores = processors(ids, logits.float())
            token = argmax(scores)
            ids = torch.cat([ids, token[:, None]], dim=-1)
            if streamer is not None:
                streamer.put(token)
            if made == new_tokens or bool(torch.isin(token, eos_ids).any()) or bool(stopping(ids, scores).any()):
                break
            logits = self.step(token, position, cache, base)
            position += 1
        if streamer is not None:
            streamer.end()
        return ids


def static_generator(
    model: Any,
    device: str,
    delta: LoraDelta | None,
    decode: str,
    cache_dir: Path | None = None,
    rows: str | None = None,
) -> StaticGenerator | None:
    """The static step's generator for ``model`` (one per model, made on first use), or None where generate() runs:
    ``decode`` "generate", "auto" off the CPU, or a model the step does not implement (logged once). On the CPU,
    "compiled" (and "auto" with rows only a compiled step reads fast: q8) also compiles the step in the background,
    cached under ``cache_dir``; on a GPU medcot.zerogpu compiles it ahead of time. ``rows``: step_rows.py's kinds."""
    if decode == "generate" or (decode == "auto" and device != "cpu"):
        return None
    compiles = device == "cpu" and (decode == "compiled" or (decode == "auto" and rows in COMPILED_ROWS))
    if rows in COMPILED_ROWS and not compiles:
        rows = None  # the eager step reads the float16 weights, not these rows: not worth building
    made = getattr(model, "_medcot_static", None)
    if made is not None:
        return made or None
    try:
        model._medcot_static = StaticGenerator(StaticDecoder(model, delta, rows if device == "cpu" else None))
    except (ValueError, RuntimeError) as exc:  # RuntimeError: a kernel its rows need is missing here
        log.info("the static decode step is not used: %s", exc)
        model._medcot_static = False
        return None
    if compiles:
        from medcot.model.compiled_step import build_in_background

        build_in_background(model._medcot_static, default_cache_dir() if cache_dir is None else cache_dir)
    return model._medcot_static
