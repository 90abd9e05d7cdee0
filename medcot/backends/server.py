"""The server-mode backend: the card's prompt as token ids to a model server (vLLM), the base by name beside it.

The wire is medcot.backends.openai_client. The tokenizer comes from where local mode takes it, so the prompt is
tokenized here as the local path does it. No module of ours on this path imports torch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from transformers import PreTrainedTokenizerBase

from medcot.backends.openai_client import ServedModel, ServerClient, ServerError, UnknownModelError
from medcot.chunks import Chunk
from medcot.config import EMBEDDED_MODEL, GenerationParams, Settings, is_embedded
from medcot.errors import ConfigError, ModelLoadError
from medcot.model.embedded_fallback import falls_back_to_embedded
from medcot.model.hub import base_folder, fetch, load_tokenizer, ships_tokenizer
from medcot.model.progress import Progress
from medcot.prompt import stop_token_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSettings:
    """MEDCOT_SERVER_*: an OpenAI-compatible URL such as http://127.0.0.1:8000/v1 selects server mode."""

    url: str
    model: str = "medcot"  # the fine-tuned model's served name (a vLLM --lora-modules name)
    base_model: str | None = None  # the base's served name; None: the one /v1/models lists
    api_key: str | None = field(default=None, repr=False)  # bearer token, never printed
    # A server batches requests, so many more run at once than the two a local model serves well.
    concurrency: ClassVar[int] = 16
    queue_size: ClassVar[int] = 64
    remote: ClassVar[bool] = True


def settings_from_env(env: Mapping[str, str]) -> ServerSettings | None:
    """The server's settings, or None when MEDCOT_SERVER_URL is unset (the environment selects no server)."""
    url = env.get("MEDCOT_SERVER_URL", "").strip()
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"MEDCOT_SERVER_URL must start with http:// or https://, got {url!r}.")
    return ServerSettings(
        url,
        model=env.get("MEDCOT_SERVER_MODEL", "").strip() or ServerSettings.model,
        base_model=env.get("MEDCOT_SERVER_BASE_MODEL", "").strip() or None,
        api_key=env.get("MEDCOT_SERVER_API_KEY", "").strip() or None,
    )


def selected(settings: Settings) -> bool:
    return isinstance(settings.backend, ServerSettings)


# Hub files of a tokenizer (and the adapter's config): never the weights.
TOKENIZER_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja"]


def load_tokenizer_for_server(settings: Settings, progress: Progress) -> PreTrainedTokenizerBase:
    """The tokenizer local mode would use; with the defaults and no Hub, the embedded base's (the same Gemma 3 one)."""
    progress("Loading the tokenizer (the model server holds the weights)", None)
    try:
        if settings.adapter and not is_embedded(settings.base_model):
            adapter_dir = fetch(settings.adapter, settings, progress, "adapter", TOKENIZER_PATTERNS)
            if ships_tokenizer(adapter_dir):
                return load_tokenizer(adapter_dir, None)
        return load_tokenizer(base_folder(settings, progress, TOKENIZER_PATTERNS), None)
    except ModelLoadError as exc:
        if falls_back_to_embedded(settings, exc):
            log.warning("%s Using the embedded Gemma 3 270M's tokenizer.", exc)
            return load_tokenizer(base_folder(replace(settings, base_model=EMBEDDED_MODEL), progress), None)
        raise
    except Exception as exc:
        raise ModelLoadError(f"The tokenizer could not be loaded: {str(exc).splitlines()[0][:300]}") from None


def base_model_of(models: Sequence[ServedModel], model: str) -> str | None:
    """The served base to compare ``model`` with: its LoRA parent, else the one base listed beside it."""
    for entry in models:
        if entry.id == model and entry.parent:
            return entry.parent
    bases = [entry.id for entry in models if not entry.parent and entry.id != model]
    return bases[0] if len(bases) == 1 else None


class ServerBackend:
    """The Backend of server mode: adapter requests go to ``model``, base requests to the base by name, at once.

    What the server lists is read again at most every ``MODELS_TTL_S``: the status line follows a server that comes,
    goes or changes what it serves, without a request to /v1/models for each question.
    """

    MODELS_TTL_S = 5.0
    runs_base_beside = True
    status_may_change = True  # the server can come, go or change what it serves
    embedded = False  # whatever the server serves, the card's prompt goes to it
    base_alone = False

    def __init__(
        self, client: ServerClient, model: str, base_model: str | None, tokenizer: PreTrainedTokenizerBase
    ) -> None:
        self.client = client
        self.model = model
        self.configured_base = base_model
        self.base_id, self.adapter_id = base_model or "", model  # as configured; what the server lists may differ
        self.tokenizer = tokenizer
        self.stop_token_ids = tuple(stop_token_ids(tokenizer, None))
        self.notes = [f"Streaming from the model server at {client.url}; no weights are loaded here."]
        self._lock = threading.Lock()
        self._listed: tuple[float, list[ServedModel] | ServerError] | None = None

    def listed(self) -> list[ServedModel]:
        """The server's models (cached briefly); raises the ServerError that explains why they are unknown."""
        with self._lock:
            now = time.monotonic()
            if self._listed is None or now - self._listed[0] > self.MODELS_TTL_S:
                try:
                    result: list[ServedModel] | ServerError = self.client.models()
                except ServerError as exc:
                    result = exc
                self._listed = (now, result)
            result = self._listed[1]
        if isinstance(result, ServerError):
            raise result
        return result

    def base_model(self) -> str | None:
        if self.configured_base:
            return self.configured_base
        try:
            return base_model_of(self.listed(), self.model)
        except ServerError:
            return None

    def compare_unavailable(self) -> str | None:
        """Why the base cannot answer beside the fine-tuned model, or None when it can."""
        if self.configured_base:
            return None
        try:
            models = self.listed()
        except ServerError as exc:
            return str(exc)
        if base_model_of(models, self.model) is None:
            return (
                f"The model server at {self.client.url} lists no base model for `{self.model}`: set "
                "MEDCOT_SERVER_BASE_MODEL to the base's served name."
            )
        return None

    def describe(self) -> str:
        """What the app is connected to (server, models), or why it is not."""
        try:
            models = self.listed()
        except ServerError as exc:
            return str(exc)
        names = [entry.id for entry in models]
        if self.model not in names:
            served = ", ".join(f"`{name}`" for name in names) or "nothing"
            return (
                f"The model server at {self.client.url} does not serve `{self.model}` (it serves {served}): "
                "set MEDCOT_SERVER_MODEL to one of them."
            )
        base = self.base_model()
        compared = f", base `{base}`" if base else ", no base model to compare with"
        if base and self.configured_base and base not in names:
            compared = f", base `{base}` (not listed by the server)"
        return f"Model server {self.client.url}: `{self.model}`{compared}"

    def facts(self) -> dict[str, Any]:
        return dict(
            base=self.base_id, adapter=self.model, kind="server", merged=False, device=self.client.url, dtype=""
        )

    def stream(
        self,
        input_ids: Sequence[int],
        params: GenerationParams,
        cancel: threading.Event,
        use_adapter: bool,
        stop_texts: Sequence[str],
    ) -> Iterator[Chunk]:
        model = self.model if use_adapter else self.base_model()
        if model is None:
            raise UnknownModelError(self.compare_unavailable() or "The server lists no base model.")
        if cancel.is_set():
            return
        yield from self.client.stream(model, input_ids, params, cancel, stop_texts, self.stop_token_ids)


def load(settings: Settings, progress: Progress) -> ServerBackend:
    """The tokenizer and a backend streaming from MEDCOT_SERVER_URL. An unreachable server is no load failure: the
    status line says why, and the first request after the server is back is served."""
    server = settings.backend
    if not isinstance(server, ServerSettings):
        raise ModelLoadError("MEDCOT_SERVER_URL is not set.")
    tokenizer = load_tokenizer_for_server(settings, progress)
    client = ServerClient(server.url, server.api_key)
    backend = ServerBackend(client, server.model, server.base_model, tokenizer)
    try:
        backend.listed()
    except ServerError as exc:
        log.warning("%s", exc)  # the status line says so too; never the key (it is in no message)
    progress("Connected to the model server", 1.0)
    return backend
