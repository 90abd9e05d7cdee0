"""ZeroGPU glue: the GPU-bound stream decorated with @spaces.GPU; a no-op off ZeroGPU.

Kept apart from the library (which never imports `spaces`) and from the UI (which only sees a stream function).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import spaces
from spaces.config import Config as SpacesConfig

from medcot.config import GenerationParams
from medcot.engine import Engine, StreamEvent
from medcot.prompt import Turn

log = logging.getLogger(__name__)

StreamFn = Callable[[str, Sequence[Turn], GenerationParams, bool], Iterator[StreamEvent]]

# Seconds of GPU a request may hold: start-up plus a pessimistic decode rate for the 270M on a ZeroGPU slice.
GPU_BASE_SECONDS = 15
GPU_SECONDS_PER_TOKEN = 0.04
GPU_MAX_SECONDS = 180


def on_zero_gpu() -> bool:
    return bool(SpacesConfig.zero_gpu)


def gpu_seconds(question: str, history: Sequence[Turn], params: GenerationParams, use_adapter: bool = True) -> int:
    """ZeroGPU duration for one request, from its token budget (shorter requests get better queue priority)."""
    return int(min(GPU_MAX_SECONDS, GPU_BASE_SECONDS + params.max_new_tokens * GPU_SECONDS_PER_TOKEN))


def gpu_stream(engine: Engine) -> StreamFn:
    """engine.stream wrapped in @spaces.GPU with a per-request duration."""

    @spaces.GPU(duration=gpu_seconds)
    def stream(
        question: str, history: Sequence[Turn], params: GenerationParams, use_adapter: bool = True
    ) -> Iterator[StreamEvent]:
        yield from engine.stream(question, history, params, use_adapter=use_adapter)

    return stream


def start_engine(engine: Engine) -> Engine:
    """Load the model: at import on ZeroGPU (its docs require CUDA placement there), else in the background
    so the page is up at once and shows the load's progress."""
    if on_zero_gpu():
        log.info("ZeroGPU: loading the model onto CUDA at import")
        engine.load()
    else:
        engine.load_in_background()
    return engine
