"""tests/helpers/tiny_cache.py: the tiny repos are built once, reused while intact, rebuilt when stale or damaged.

The builder here writes two small files instead of training models (the cache, not the models, is under test);
tests/helpers/tiny.py's real build is what every other test loads through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import tiny, tiny_cache


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Each build's folder, in order; the builder writes a weights file and a config per repo."""
    made: list[Path] = []

    def build_repos(root: Path, train_base: bool = True) -> tiny.TinyRepos:
        made.append(root)
        repos = tiny.repos_in(root)
        for repo in (repos.base, repos.adapter, repos.merged, repos.bare_base):
            repo.mkdir(parents=True)
            (repo / "model.safetensors").write_bytes(bytes(range(256)) * (len(made) + int(train_base)))
            (repo / "config.json").write_text(json.dumps({"trained": train_base}))
        return repos

    monkeypatch.setattr(tiny, "build_repos", build_repos)
    return made


def test_built_once_then_copied_from_the_cache(builds: list[Path], tmp_path: Path) -> None:
    first = tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "one")
    second = tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "two")
    assert len(builds) == 1
    assert first.adapter == tmp_path / "one" / "adapter" and second.adapter == tmp_path / "two" / "adapter"
    assert (first.base / "model.safetensors").read_bytes() == (second.base / "model.safetensors").read_bytes()
    assert not (tmp_path / "two" / tiny_cache.MANIFEST).exists()


def test_a_copy_written_into_leaves_the_cache_alone(builds: list[Path], tmp_path: Path) -> None:
    first = tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "one")
    (first.base / "model.safetensors").write_bytes(b"changed by a test")
    second = tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "two")
    assert len(builds) == 1
    assert (second.base / "model.safetensors").read_bytes() != b"changed by a test"


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: (entry / "base" / "model.safetensors").write_bytes(b"truncated"),
        lambda entry: (entry / "merged" / "config.json").unlink(),
        lambda entry: (entry / tiny_cache.MANIFEST).unlink(),  # a build killed before its manifest
        lambda entry: (entry / tiny_cache.MANIFEST).write_text("{not json"),
    ],
    ids=["changed file", "missing file", "no manifest", "bad manifest"],
)
def test_a_damaged_entry_is_rebuilt(builds: list[Path], tmp_path: Path, damage: Callable[[Path], object]) -> None:
    tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "one")
    damage(tmp_path / "cache" / tiny_cache.cache_key(True))
    repos = tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "two")
    assert len(builds) == 2
    assert (repos.merged / "config.json").read_text() == json.dumps({"trained": True})
    assert (repos.base / "model.safetensors").read_bytes() == bytes(range(256)) * 3


def test_the_key_follows_the_builder_and_its_inputs(
    builds: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained, random = tiny_cache.cache_key(True), tiny_cache.cache_key(False)
    assert trained != random
    tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "one", train_base=False)
    assert (tmp_path / "one" / "base" / "config.json").read_text() == json.dumps({"trained": False})
    monkeypatch.setattr(tiny, "CORPUS", [*tiny.CORPUS, "one more line"])
    assert tiny_cache.cache_key(True) != trained
    tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "two")
    assert len(builds) == 2  # the changed corpus is a new entry: built, not the old one reused


def test_no_build_is_left_half_done(builds: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def killed(root: Path, train_base: bool = True) -> tiny.TinyRepos:
        (root / "base").mkdir()
        raise KeyboardInterrupt

    working = tiny.build_repos
    monkeypatch.setattr(tiny, "build_repos", killed)
    with pytest.raises(KeyboardInterrupt):
        tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "one")
    assert not [path for path in (tmp_path / "cache").iterdir() if path.suffix != ".lock"]
    monkeypatch.setattr(tiny, "build_repos", working)
    left_by_a_sigkill = tmp_path / "cache" / f".{tiny_cache.cache_key(True)}-abc123"
    (left_by_a_sigkill / "base").mkdir(parents=True)
    repos = tiny_cache.cached_repos(tmp_path / "cache", tmp_path / "two")
    assert (repos.base / "config.json").is_file() and len(builds) == 1
    assert not left_by_a_sigkill.exists()
