"""The tiny repos (tests/helpers/tiny.py) built once and kept on disk for every later pytest process.

Building them trains two tiny models: about 25 s of CPU, which every pytest process paid before. The cache entry's
name is a hash of what decides their bytes (tiny.py, the prompt text and chat template it trains on, the library
versions), so a change to any of them builds a new entry. An entry holds a manifest of its files' SHA-256, written
last: an entry without one (a build that was killed) or whose files no longer match it is rebuilt. A file lock
makes parallel processes wait for one build instead of racing; each caller gets its own copy, so a test that
writes into a repo cannot change the cache.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

from filelock import FileLock

from medcot.prompt import GEMMA3_CHAT_TEMPLATE
from tests.helpers import tiny

LIBRARIES = ("torch", "transformers", "peft", "tokenizers", "safetensors")
MANIFEST = "manifest.json"


def cache_key(train_base: bool) -> str:
    """A name for the build: it changes with anything that can change the repos' bytes."""
    digest = hashlib.sha256(Path(tiny.__file__).read_bytes())
    inputs = [repr(tiny.CORPUS), GEMMA3_CHAT_TEMPLATE, f"train_base={train_base}"]
    inputs += [f"{name}=={version(name)}" for name in LIBRARIES]
    for text in inputs:
        digest.update(text.encode())
    return f"{'trained' if train_base else 'random'}-base-{digest.hexdigest()[:16]}"


def _file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != MANIFEST
    }


def _intact(entry: Path) -> bool:
    try:
        expected = json.loads((entry / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return bool(expected) and _file_hashes(entry) == expected


def _build(entry: Path, train_base: bool) -> None:
    """Build next to the entry, then swap it in whole: a reader never sees half a build."""
    for killed in entry.parent.glob(f".{entry.name}-*"):  # a build killed outright (under the lock: none running)
        shutil.rmtree(killed, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=entry.parent))
    try:
        tiny.build_repos(staging, train_base=train_base)
        (staging / MANIFEST).write_text(json.dumps(_file_hashes(staging), indent=1))
        shutil.rmtree(entry, ignore_errors=True)
        staging.rename(entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def cached_repos(cache_dir: Path, dest: Path, train_base: bool = True) -> tiny.TinyRepos:
    """The tiny repos, copied into ``dest`` from the cache under ``cache_dir`` (built there first when missing,
    stale or damaged)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    entry = cache_dir / cache_key(train_base)
    with FileLock(str(entry) + ".lock"):
        if not _intact(entry):
            _build(entry, train_base)
        shutil.copytree(entry, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(MANIFEST))
    return tiny.repos_in(dest)
