"""The base model to train on, found and loaded as the app finds it (medcot.model.hub and medcot.model.embedded),
in the dtype the hardware trains in: float32 on CPU, bfloat16 on CUDA."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from medcot.config import Settings
from medcot.errors import ModelLoadError
from medcot.model import hub
from medcot.model.hub import load_tokenizer
from training.errors import TrainingError


@dataclass(frozen=True)
class Hardware:
    device: str
    dtype: torch.dtype
    optimizer: str
    why: str  # said in the log

    @property
    def bf16(self) -> bool:
        return self.dtype == torch.bfloat16


def pick_hardware(optimizer: str = "auto") -> Hardware:
    """bf16 and the card's adamw_8bit where CUDA and bitsandbytes are there; float32 and adamw_torch on CPU."""
    if torch.cuda.is_available():
        has_bnb = importlib.util.find_spec("bitsandbytes") is not None
        chosen = optimizer if optimizer != "auto" else ("adamw_8bit" if has_bnb else "adamw_torch")
        if chosen == "adamw_8bit" and not has_bnb:
            raise TrainingError("optimizer adamw_8bit needs bitsandbytes: pip install bitsandbytes.")
        why = f"CUDA ({torch.cuda.get_device_name()}): bfloat16, {chosen}" + ("" if has_bnb else " (no bitsandbytes)")
        return Hardware("cuda", torch.bfloat16, chosen, why)
    if optimizer == "adamw_8bit":
        raise TrainingError("optimizer adamw_8bit needs CUDA; on CPU use adamw_torch (or auto).")
    return Hardware("cpu", torch.float32, "adamw_torch", "CPU (no CUDA): float32 weights, adamw_torch")


@dataclass
class Base:
    model: Any
    tokenizer: PreTrainedTokenizerBase
    name: str  # as given: "embedded", a Hub id or a folder; what the adapter's config names as its base
    folder: Path


def _progress(message: str, fraction: float | None) -> None:
    """The embedded conversion's and the download's progress, as lines on stderr."""
    print(message + ("" if fraction is None else f" ({fraction:.0%})"), file=sys.stderr, flush=True)


def base_folder(name: str) -> Path:
    """The folder of ``name`` as the app finds it: the embedded base (converted once into MEDCOT_CACHE_DIR), a local
    folder, or a Hub repo (HF_TOKEN for the gated Gemma)."""
    settings = replace(Settings.from_env(), base_model=name)
    try:
        return hub.base_folder(settings, _progress)
    except ModelLoadError as exc:
        raise TrainingError(str(exc)) from None


def load_base(name: str, hardware: Hardware) -> Base:
    """Tokenizer (always with Gemma 3's chat template) and weights; a base that cannot load is one readable line."""
    from transformers import AutoModelForCausalLM

    folder = base_folder(name)
    try:
        tokenizer = load_tokenizer(folder, None)
        # eager attention: what Gemma 3's model card and transformers recommend for training it.
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=hardware.dtype, attn_implementation="eager")
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TrainingError(f"The base model {name} cannot be loaded from {folder}: {text}") from None
    return Base(model, tokenizer, name, folder)
