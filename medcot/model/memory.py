"""Keeping the process's resident memory what it uses (the README's target: 1536 MiB): glibc's heap settings and
trimming through ctypes (Python has no portable calls for them; no-ops elsewhere), and the tokenizer's build data."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from typing import Any


@functools.cache  # find_library runs ldconfig: once per process, not after every answer
def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_freed_memory() -> None:
    """Hand the memory the process freed back to the OS: glibc keeps freed blocks in its heaps, like the
    quantization's temporaries (~200 MB) and the holes of an answer's KV cache (~30-90 MB, docs/benchmark.md)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        _libc().malloc_trim(0)


@contextlib.contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """While loading, serve allocations of 1 MiB and more by mmap, so each goes back to the OS as it is freed.

    glibc's default raises its mmap threshold as large blocks are freed, and the tokenizer's and the int8
    quantization's temporaries then pile up in the heap: loading the 270M peaked at 1.8 GB RSS, 1.46 GB with this.
    Afterwards both thresholds are set to the ceilings glibc's own adjustment reaches (mmap 32 MiB, trim 64 MiB):
    a fixed mmap threshold leaves the trim one at 128 KiB, which cost decoding 8% in page faults (docs/benchmark.md).
    """
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
    try:
        mallopt = _libc().mallopt
        mallopt(m_mmap_threshold, 2**20)
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        mallopt(m_mmap_threshold, 32 * 2**20)
        mallopt(m_trim_threshold, 64 * 2**20)


def drop_tokenizer_build_data(tokenizer: Any) -> Any:
    """Free the Python copies of the vocabulary and merges a tokenizer was built from; return the tokenizer.

    transformers 5's BPE tokenizers keep them (``_vocab``, ``_merges``: ~140 MB for Gemma's, docs/benchmark.md) with
    no option not to, and read them only in ``__init__``: the rest goes through the Rust tokenizer's own copy."""
    for name, empty in (("_vocab", dict), ("_merges", list)):
        if isinstance(getattr(tokenizer, name, None), empty) and getattr(tokenizer, "_tokenizer", None) is not None:
            setattr(tokenizer, name, empty())
    release_freed_memory()
    return tokenizer
