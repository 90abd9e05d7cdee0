"""The embedded model's one-time conversion, observed: its steps' progress, and the GGUF read once instead of thrice.

transformers reads a GGUF file afresh for the tokenizer, for the config and for the weights; each read parses the
262k-token vocabulary into numpy views (measured 26-43 s per read on 2 busy cores, 55% of the whole conversion).
It exposes no reader to pass in, and its weight loop's only progress hook is the tqdm class it iterates with, so
both are stood in for while a conversion runs (medcot.model.embedded serializes conversions in a process).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medcot.model.progress import Progress

TICK_S = 1.0  # how often a step without progress of its own is re-reported (the page polls every second)


class Steps:
    """Reports the conversion's steps to a progress callback, each owning a slice [start, end) of the bar.

    A step that reports its own movement (``advance``: the weights, per tensor) shows it as it happens. One that
    cannot (reading the file, converting the tokenizer) is re-reported every TICK_S with its share of the bar filled
    by the time it has run against its estimate, never past 90% of it: the bar moves, but does not claim the end.
    """

    def __init__(self, progress: Progress, prefix: str) -> None:
        self._progress = progress
        self._prefix = prefix
        self._changed = threading.Condition()
        self._step: tuple[str, float, float, float] | None = None  # label, start, end, estimate in seconds
        self._started = 0.0
        self._advanced = False
        self._shown = self._floor = 0.0
        self._closed = False
        self._ticker = threading.Thread(target=self._tick, name="medcot-convert-progress", daemon=True)
        self._ticker.start()

    def begin(self, label: str, start: float, end: float, estimate_s: float) -> None:
        with self._changed:
            self._step, self._started, self._advanced = (label, start, end, estimate_s), time.monotonic(), False
            self._report(self._title(), start)

    def advance(self, done: float, detail: str) -> None:
        """The current step is ``done`` (0-1) through its work; ``detail`` says what it is at."""
        with self._changed:
            if self._step is None:
                return
            label, _, end, _ = self._step
            if not self._advanced:  # the rest of the step's share, from where its time-based filling left it
                self._advanced, self._floor = True, self._shown
            fraction = self._floor + (end - self._floor) * min(max(done, 0.0), 1.0)
            self._report(f"{self._prefix}{label}: {detail}", fraction)

    def _report(self, message: str, fraction: float) -> None:
        self._shown = max(self._shown, fraction)  # the bar never goes back
        self._progress(message, self._shown)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._ticker.join()

    def _tick(self) -> None:
        with self._changed:
            while not self._closed:
                self._changed.wait(TICK_S)
                if self._closed or self._step is None or self._advanced:
                    continue
                _, start, end, estimate = self._step
                share = 0.9 * min((time.monotonic() - self._started) / estimate, 1.0) if estimate > 0 else 0.0
                self._report(self._title(), start + (end - start) * share)

    def _title(self) -> str:
        label, _, _, estimate = self._step or ("", 0.0, 0.0, 0.0)
        return f"{self._prefix}{label} (one time, up to ~{estimate:.0f} s)"


@contextlib.contextmanager
def one_reading(gguf_file: Path, steps: Steps) -> Iterator[None]:
    """Read ``gguf_file`` (now), and while this lasts let transformers' GGUF loading use that one reading; its weight
    loop reports to ``steps`` per tensor, by size (the 262k x 640 embedding is most of the work)."""
    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_loading

    reader_class, tqdm_class = gguf.GGUFReader, gguf_loading.tqdm
    the_reader = reader_class(gguf_file)  # the slow part, here: the caller's current step is "reading"

    def reader(path: Any, *args: Any, **kwargs: Any) -> Any:
        if Path(path).resolve() != gguf_file.resolve() or args or kwargs:
            return reader_class(path, *args, **kwargs)
        return the_reader

    class TensorProgress(tqdm_class):  # type: ignore[misc, valid-type]
        def __init__(self, iterable: Any = None, *args: Any, **kwargs: Any) -> None:
            super().__init__(iterable, *args, **{**kwargs, "disable": True})  # our steps report, not a bar

        def __iter__(self) -> Iterator[Any]:
            tensors = list(self.iterable)
            total = sum(int(tensor.n_elements) for tensor in tensors) or 1
            done = 0
            for index, tensor in enumerate(tensors, 1):
                steps.advance(done / total, f"tensor {index}/{len(tensors)}")
                yield tensor
                done += int(tensor.n_elements)
            steps.advance(1.0, f"{len(tensors)}/{len(tensors)} tensors")

    gguf.GGUFReader, gguf_loading.tqdm = reader, TensorProgress
    try:
        yield
    finally:
        gguf.GGUFReader, gguf_loading.tqdm = reader_class, tqdm_class
