"""memory.py: glibc's heap settings while loading, and the tokenizer's build data freed."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from medcot.model.hub import load_tokenizer
from medcot.model.memory import drop_tokenizer_build_data
from tests.helpers.tiny import TinyRepos

_MMAP_CHECK = """
import ctypes
import resource
from medcot.model import memory

libc = ctypes.CDLL("libc.so.6")

class Mallinfo2(ctypes.Structure):  # struct mallinfo2: ten size_t fields, hblks (mmapped blocks) the fourth
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", *"abcdef")]

libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def mmapped(size):
    before = libc.mallinfo2().hblks
    block = libc.malloc(size)
    try:
        return libc.mallinfo2().hblks > before
    finally:
        libc.free(block)

def refaults(size, rounds=4):  # page faults of writing a block of `size` again after it was freed
    total = 0
    for index in range(rounds + 1):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        total += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) if index else 0
    return total

with memory.large_blocks_mapped():
    inside = mmapped(2 * 2**20), mmapped(256 * 2**10)
print(*inside, mmapped(2 * 2**20), mmapped(40 * 2**20), refaults(4 * 2**20))
"""


def test_large_blocks_are_mapped_while_loading_and_heap_served_after() -> None:
    """In a fresh process: a long-lived one's heap may hold a free chunk that serves a block before any mmap."""

    try:
        ctypes.CDLL("libc.so.6").mallinfo2  # noqa: B018 - glibc 2.33+
    except (OSError, AttributeError):
        pytest.skip("needs glibc")
    out = subprocess.run([sys.executable, "-c", _MMAP_CHECK], capture_output=True, text=True, timeout=120, check=True)
    *mapped, refaults = out.stdout.split()
    inside_large, inside_small, after_large, after_huge = (word == "True" for word in mapped)
    assert inside_large, "while loading, a 2 MiB block must come from mmap, so freeing it returns it to the OS"
    assert not inside_small
    assert not after_large, "after loading, per-token buffers are served from the heap again"
    assert after_huge
    # A freed 4 MiB block stays at the heap's top: writing it again costs no page faults (trimmed: 1,024 each time).
    assert int(refaults) < 100


# --- the real Gemma 3 270M ------------------------------------------------------------------------------------------


SAMPLES = ["<start_of_turn>user\nfever and a rash<end_of_turn>", "<think>dyspnea, orthopnea</think> answer", "ẞ ☃ 😀"]


@pytest.fixture
def gemma_tokenizer_folder(tiny_repos: TinyRepos, tmp_path: Path) -> Path:
    """The tiny tokenizer, loaded as the class Gemma's checkpoints name (GemmaTokenizer keeps the build data)."""
    for file in tiny_repos.base.glob("tokenizer*"):
        shutil.copy(file, tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "GemmaTokenizer"}))
    return tmp_path


def test_tokenizer_build_data_is_freed_and_the_tokenizer_works_the_same(gemma_tokenizer_folder: Path) -> None:
    fresh = AutoTokenizer.from_pretrained(gemma_tokenizer_folder)
    assert type(fresh).__name__ == "GemmaTokenizer"
    assert fresh._vocab and fresh._merges, "transformers keeps the build data: this test would prove nothing"
    loaded = load_tokenizer(gemma_tokenizer_folder, None)
    assert loaded._vocab == {} and loaded._merges == []
    for text in SAMPLES:
        ids = fresh(text, add_special_tokens=False).input_ids
        assert loaded(text, add_special_tokens=False).input_ids == ids
        assert loaded.decode(ids) == fresh.decode(ids)
    assert loaded.get_vocab() == fresh.get_vocab()
    assert loaded.convert_tokens_to_ids("<end_of_turn>") == fresh.convert_tokens_to_ids("<end_of_turn>")


def test_dropping_build_data_leaves_other_tokenizers_alone() -> None:
    class Plain:  # a tokenizer without transformers' build data (a slow one, or another library's)
        def __init__(self) -> None:
            self._vocab = {"a": 0}

    plain = Plain()
    assert drop_tokenizer_build_data(plain) is plain and plain._vocab == {"a": 0}
