"""Keeping the process's resident memory what it uses: glibc's heap settings and trimming, and the tokenizer's
build data.

On CPU the app's resident memory is mostly the model (~0.7 GB in the f16-int8head mode), the tokenizer and what
the allocator keeps after freeing; the README's target for all of it is 1536 MiB. Python has no portable calls
for the allocator: these use glibc's through ctypes and do nothing elsewhere.
"""

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
    """Hand the memory the process freed back to the OS, so its RSS is what it uses.

    glibc keeps freed blocks of up to 32 MB in its heaps (the quantization's temporaries, after loading, are of that
    size: ~200 MB), and an answer's KV cache, grown a token at a time, leaves its freed copies as holes in the heap
    of whichever thread generated it (one heap per thread, up to 8 per core): ~30-90 MB more after each long answer
    of a conversation. Python has no portable call for it.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
        _libc().malloc_trim(0)


@contextlib.contextmanager
def large_blocks_mapped() -> Iterator[None]:
    """While loading, serve allocations of 1 MiB and more by mmap, so each goes back to the OS as it is freed.

    glibc's default raises its mmap threshold up to 32 MiB as large blocks are freed, after which the tokenizer's
    and the int8 quantization's temporaries pile up in the heap before malloc_trim can return them: the peak RSS
    of loading the 270M was 1.8 GB with the default and 1.46 GB with this. After loading, both thresholds are the
    ceilings glibc's own adjustment reaches (mmap 32 MiB, trim 64 MiB), which a fixed mmap threshold turns off:
    with the default trim threshold (128 KiB) the heap gave back the KV cache's per-token copies after every
    token and took them again as ~2,000 page faults, which cost decoding 8% (38 vs 41 tok/s on the 270M).
    No-op where libc is not glibc.
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

    transformers 5's BPE tokenizers (GemmaTokenizer among them) keep the vocabulary dict and merges list they pass
    to the Rust tokenizer as ``_vocab`` and ``_merges``, and read them only in ``__init__``: for Gemma's 262,144
    tokens and 514,906 merges that is ~140 MB of RSS (measured) held for nothing, 10% of the 270M app's. Encoding,
    decoding, ``get_vocab()`` and saving all go through the Rust tokenizer, which keeps its own. transformers has no
    option to skip keeping them, so they are replaced with empty ones of the same types here.
    """
    for name, empty in (("_vocab", dict), ("_merges", list)):
        if isinstance(getattr(tokenizer, name, None), empty) and getattr(tokenizer, "_tokenizer", None) is not None:
            setattr(tokenizer, name, empty())
    release_freed_memory()
    return tokenizer
