"""Settings read from the environment, with the model card's defaults."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar, Protocol

from medcot.errors import ConfigError, InputError

DEFAULT_BASE_MODEL = "google/gemma-3-270m-it"
# As the card's Quick Start writes it; the card is also published as alpha-ai/Medical-Diagnosis-COT-Gemma3-270M.
DEFAULT_ADAPTER = "alphaaico/Medical-Diagnosis-COT-Gemma3-270M"
# The card's Hub ids: any other adapter (a local folder, a self-trained one) is never called the card's model.
CARD_ADAPTERS = (DEFAULT_ADAPTER, "alpha-ai/Medical-Diagnosis-COT-Gemma3-270M")

# MEDCOT_BASE_MODEL value selecting the real Gemma 3 270M base shipped on PyPI (medcot.model.embedded).
EMBEDDED_MODEL = "embedded"


def is_embedded(name: str) -> bool:
    return name == EMBEDDED_MODEL or name.startswith(EMBEDDED_MODEL + ":")


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """$MEDCOT_CACHE_DIR, else medcot/ under the user's cache folder ($XDG_CACHE_HOME or ~/.cache)."""
    env = os.environ if env is None else env
    configured = env.get("MEDCOT_CACHE_DIR", "").strip()
    if configured:
        return Path(configured).expanduser()
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medcot"


DTYPES = ("auto", "float32", "bfloat16", "float16")
# How a base model alone is prompted (medcot.prompt_styles): auto gives the embedded base the worked-example primer.
BASE_PROMPT_CHOICES = ("auto", "card", "primer", "primer-chat")
DEVICES = ("auto", "cpu", "cuda")
# Decoding (medcot.static_generation): auto is the static step on CPU, generate() elsewhere, on ZeroGPU the step
# compiled ahead of time at startup where that works (medcot.zerogpu).
DECODE_MODES = ("auto", "generate", "static", "compiled")
_SWITCH = ("1", "0", "true", "false", "yes", "no")  # MEDCOT_MERGE


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings; defaults from the card's Quick Start (temperature 1.0, top-p 0.95, top-k 64)."""

    max_new_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 0.95
    top_k: int = 64
    repetition_penalty: float = 1.0

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "max_new_tokens": (1, 4096),
        "temperature": (0.0, 2.0),
        "top_p": (0.01, 1.0),
        "top_k": (0, 1000),
        "repetition_penalty": (1.0, 2.0),
    }

    def validated(self) -> GenerationParams:
        """Return a copy with numbers checked; raise InputError (a ValueError) naming the bad parameter."""
        values = {}
        for name, (low, high) in self.LIMITS.items():
            raw = getattr(self, name)
            kind = int if name in ("max_new_tokens", "top_k") else float
            if isinstance(raw, bool) or not isinstance(raw, int | float | str):
                raise InputError(f"{name} must be a number between {low} and {high}, got {raw!r}.")
            try:
                number = float(raw)
            except ValueError:
                raise InputError(f"{name} must be a number between {low} and {high}, got {raw!r}.") from None
            if number != number or not low <= number <= high:  # NaN fails the first test
                raise InputError(f"{name} must be between {low} and {high}, got {raw!r}.")
            if kind is int and number != int(number):
                raise InputError(f"{name} must be a whole number, got {raw!r}.")
            values[name] = kind(number)
        return replace(self, **values)


class BackendSettings(Protocol):
    """A backend's own settings, read from the environment by its module (medcot.backends lists them)."""

    concurrency: int  # MEDCOT_CONCURRENCY's default with this backend
    queue_size: int  # MEDCOT_QUEUE_SIZE's default
    remote: bool  # it generates elsewhere: no weights load here, no GPU is asked for


@dataclass(frozen=True)
class Settings:
    base_model: str = DEFAULT_BASE_MODEL
    adapter: str | None = DEFAULT_ADAPTER  # None: serve the base alone
    max_new_tokens: int = 512
    max_input_tokens: int = 2048
    dtype: str = "auto"  # auto: bfloat16 on CUDA, the CPU mode's choice on CPU
    device: str = "auto"
    merge_adapter: bool = True  # merged weights decode faster; the base stays reachable either way (lora_delta)
    cpu_mode: str = "auto"  # see medcot.model.cpu_speed
    decode: str = "auto"  # see DECODE_MODES
    concurrency: int = 2  # generations run at once (per event); more wait in the queue
    queue_size: int = 16  # waiting requests beyond this are refused with a "queue is full" message
    base_prompt: str = "auto"  # a base model alone: see BASE_PROMPT_CHOICES
    cache_dir: Path | None = None  # where the embedded GGUF is converted; None: default_cache_dir()
    hub_offline: bool = False  # HF_HUB_OFFLINE: the Hub is not asked, so the defaults fall back to the embedded base
    load_wait_s: int = 180  # a question asked while loading waits this long (a first start converts the GGUF)
    hf_token: str | None = field(default=None, repr=False)  # never printed
    # Feedback on answers (medcot.ui.feedback): JSONL under this folder; pushed to this Hub dataset repo when set.
    feedback_dir: Path | None = None
    feedback_dataset: str | None = None
    backend: BackendSettings | None = None  # a backend other than the local model, with its own settings

    @property
    def server_mode(self) -> bool:
        return self.backend is not None and self.backend.remote

    @property
    def generation_defaults(self) -> GenerationParams:
        return GenerationParams(max_new_tokens=self.max_new_tokens)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, backend: BackendSettings | None = None) -> Settings:
        """The environment's settings; a backend's own are read by its module (medcot.backends.settings_from_env)."""
        env = os.environ if env is None else env

        def integer(name: str, default: int, low: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from None
            if value < low:
                raise ConfigError(f"{name} must be at least {low}, got {value}.")
            return value

        def choice(name: str, options: tuple[str, ...], default: str) -> str:
            value = env.get(name, "").strip().lower() or default
            if value not in options:
                raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}.")
            return value

        cache = env.get("MEDCOT_CACHE_DIR", "").strip()
        feedback = env.get("MEDCOT_FEEDBACK_DIR", "").strip()

        return cls(
            base_model=env.get("MEDCOT_BASE_MODEL", "").strip() or DEFAULT_BASE_MODEL,
            adapter=env.get("MEDCOT_ADAPTER", DEFAULT_ADAPTER).strip() or None,
            max_new_tokens=integer("MEDCOT_MAX_NEW_TOKENS", 512, 1),
            max_input_tokens=integer("MEDCOT_MAX_INPUT_TOKENS", 2048, 64),
            dtype=choice("MEDCOT_DTYPE", DTYPES, "auto"),
            device=choice("MEDCOT_DEVICE", DEVICES, "auto"),
            merge_adapter=choice("MEDCOT_MERGE", _SWITCH, "1") in ("1", "true", "yes"),
            cpu_mode=env.get("MEDCOT_CPU_MODE", "").strip().lower() or "auto",  # checked by medcot.model.cpu_speed
            decode=choice("MEDCOT_DECODE", DECODE_MODES, "auto"),
            concurrency=integer("MEDCOT_CONCURRENCY", backend.concurrency if backend else 2, 1),
            queue_size=integer("MEDCOT_QUEUE_SIZE", backend.queue_size if backend else 16, 1),
            base_prompt=choice("MEDCOT_BASE_PROMPT", BASE_PROMPT_CHOICES, "auto"),
            cache_dir=Path(cache).expanduser() if cache else None,
            load_wait_s=integer("MEDCOT_LOAD_WAIT_S", 180, 0),
            hf_token=env.get("HF_TOKEN", "").strip() or None,
            hub_offline=env.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"),
            feedback_dir=Path(feedback).expanduser() if feedback else None,
            feedback_dataset=env.get("MEDCOT_FEEDBACK_DATASET", "").strip() or None,
            backend=backend,
        )
