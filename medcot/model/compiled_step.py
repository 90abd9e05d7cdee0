"""The static decode step compiled with torch.compile, built in the background while the eager step serves.

The decoder layers (StaticDecoder.step_hidden) compile to one graph, the full-attention cache length dynamic so that
every generation length shares it. Inductor's caches live under ``<cache dir>/compiled/<cache_key>``, so a later start
reuses the kernels. Until the build is done, and for ever if it fails (said in one log line), the eager step serves;
once built, dynamo runs in run-only mode: a call it was not compiled for runs eagerly instead of compiling.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from medcot.model.memory import release_freed_memory
from medcot.model.static_decode import KVCache, StaticDecoder

log = logging.getLogger(__name__)


def cache_key(decoder: StaticDecoder) -> str:
    """The machine's instruction set, torch's version, and the model's architecture and precision, as a folder name."""
    model = decoder.model
    identity = {
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "config": model.config.to_json_string(use_diff=False),
        "weights": f"{type(decoder.layers[0].qkv).__name__} {decoder.layers[0].qkv.dtype}",
        "head": type(model.lm_head).__name__,
        "delta": decoder.deltas is not None,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    return f"{identity['cpu'].lower()}-torch{torch.__version__.split('+')[0]}-{digest}"


class FallbackStep:
    """A generator's step: the compiled decoder layers in ``ready`` (per ``base``, called as StepModule.forward)
    where there are, else the eager step; a compiled call that fails turns the step eager for good."""

    def __init__(self, decoder: StaticDecoder) -> None:
        self.decoder = decoder
        self.status = "not built"
        self.ready: dict[bool, Callable[..., torch.Tensor]] = {}

    def __call__(self, token: torch.Tensor, position: torch.Tensor, cache: KVCache, base: bool) -> torch.Tensor:
        layers = self.ready.get(base)
        if layers is None:
            return self.decoder.step(token, position, cache, base)
        try:
            hidden = self.run_layers(layers, token, position, cache.keys, cache.values, cache.ring_positions)
        except Exception as exc:
            self.ready.clear()
            self.status = f"eager (the compiled step failed: {type(exc).__name__}: {exc})"[:300]
            log.warning("decode step back to eager: %s", self.status)
            return self.decoder.step(token, position, cache, base)
        return self.decoder.head(hidden)

    def run_layers(self, layers: Callable[..., torch.Tensor], *inputs: Any) -> torch.Tensor:
        return layers(*inputs)


class CompiledStep(FallbackStep):
    """The step compiled with torch.compile: ``build`` compiles for the plain model and, with an adapter delta, for
    the base; ``status`` says where it is."""

    def __init__(self, decoder: StaticDecoder, cache_dir: Path) -> None:
        super().__init__(decoder)
        self.folder = cache_dir / "compiled" / cache_key(decoder)
        self.compiled: Callable[..., torch.Tensor] | None = None  # torch.compile's wrapper, once build started
        self.finished = threading.Event()  # set when build ends, compiled or not

    def build(self, progress: Callable[[str], None] = log.info) -> bool:
        """Compile (or load from the on-disk cache) the step; True when it is in use. Never raises."""
        started = time.monotonic()
        try:
            # Inductor reads its cache folder from here at each compile (torch sets it to /tmp's on first use).
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.folder)
            self.compiled = torch.compile(self.decoder.step_hidden, fullgraph=True, dynamic=False)
            for base in (False, True) if self.decoder.deltas is not None else (False,):
                self.status = f"compiling the decode step{' for the base model' if base else ''}"
                progress(f"{self.status} (cache {os.environ['TORCHINDUCTOR_CACHE_DIR']})")
                self._warm_up(self.compiled, base)
                self.ready[base] = functools.partial(torch._dynamo.run(self.compiled), base=base)
            self.status = f"compiled in {time.monotonic() - started:.0f} s"
        except BaseException as exc:  # any failure or interruption leaves the eager step serving
            first_line = (str(exc).splitlines() or [""])[0][:200]
            self.status = f"eager (compilation failed: {type(exc).__name__}: {first_line})"
            log.warning("decode step not compiled, the eager step serves: %s", self.status)
            return False
        finally:
            release_freed_memory()  # compiling's garbage: ~250 MB held by glibc's heaps otherwise
            self.finished.set()
        progress(f"decode step {self.status}")
        return True

    def _warm_up(self, compiled: Callable[..., torch.Tensor], base: bool) -> None:
        """One step on two caches of different lengths, the full-attention layers' marked dynamic: the second proves
        that one graph serves every length (no recompile)."""
        for length in (64, 96):
            with torch.inference_mode():  # as generations run: guards tell inference tensors from others
                cache = self.decoder.new_cache(length)
                for layer, keys, values in zip(self.decoder.layers, cache.keys, cache.values, strict=True):
                    if not layer.sliding:
                        torch._dynamo.mark_dynamic(keys, 2)
                        torch._dynamo.mark_dynamic(values, 2)
                compiled(torch.tensor([0]), torch.tensor([1]), cache.keys, cache.values, cache.ring_positions, base)


def compile_into(generator: Any, cache_dir: Path, progress: Callable[[str], None] = log.info) -> bool:
    """Compile ``generator``'s step now; once built (True), its step and mode are the compiled ones."""
    generator.compiled = step = CompiledStep(generator.decoder, cache_dir)
    return _build_into(generator, step, progress)


def build_in_background(
    generator: Any, cache_dir: Path, progress: Callable[[str], None] = log.info
) -> threading.Thread:
    """compile_into in a daemon thread; ``generator.compiled`` is the step being built as soon as this returns."""
    generator.compiled = step = CompiledStep(generator.decoder, cache_dir)
    thread = threading.Thread(target=_build_into, args=(generator, step, progress), name="medcot-compile", daemon=True)
    thread.start()
    return thread


def _build_into(generator: Any, step: CompiledStep, progress: Callable[[str], None]) -> bool:
    if not step.build(progress):
        return False
    generator.step, generator.mode = step, "compiled"
    return True
