"""What server mode loads here: the tokenizer alone (the server holds the weights), and the connection to the server.

The tokenizer comes from the same place as in local mode (the adapter's folder or repo when it ships one, else the
base's; the embedded base's when the Hub cannot be reached), so the card's prompt is rendered and tokenized here
exactly as the local path does and goes to the server as token ids.
"""

from __future__ import annotations

import logging

from transformers import PreTrainedTokenizerBase

from medcot.backends.openai_client import ServerClient, ServerError
from medcot.backends.server import ServerBackend
from medcot.config import Settings, is_embedded
from medcot.errors import ModelLoadError
from medcot.generation import stop_token_ids
from medcot.model.embedded_fallback import falls_back_to_embedded
from medcot.model.hub import fetch, load_tokenizer, ships_tokenizer
from medcot.model.loading import LoadedModel
from medcot.model.progress import Progress, log_progress
from medcot.prompt import STOP_TEXTS

log = logging.getLogger(__name__)

# Hub files of a tokenizer (and the adapter's config): never the weights.
TOKENIZER_PATTERNS = ["*.json", "*.model", "*.txt", "*.jinja"]


def _embedded_tokenizer(settings: Settings, progress: Progress) -> PreTrainedTokenizerBase:
    from medcot.model import embedded

    try:
        folder = embedded.embedded_model_dir(settings.cache_dir, progress)
    except Exception as exc:
        raise ModelLoadError(f"The embedded model's tokenizer could not be prepared: {exc}") from None
    return load_tokenizer(folder, None)


def _configured_tokenizer(settings: Settings, progress: Progress) -> PreTrainedTokenizerBase:
    if settings.adapter:
        adapter_dir = fetch(settings.adapter, settings, progress, "adapter", TOKENIZER_PATTERNS)
        if ships_tokenizer(adapter_dir):
            return load_tokenizer(adapter_dir, None)
    base_dir = fetch(settings.base_model, settings, progress, "base model", TOKENIZER_PATTERNS)
    return load_tokenizer(base_dir, None)


def load_tokenizer_for_server(settings: Settings, progress: Progress) -> PreTrainedTokenizerBase:
    """The tokenizer local mode would use; with the defaults and no Hub, the embedded base's (the same Gemma 3 one)."""
    progress("Loading the tokenizer (the model server holds the weights)", None)
    if is_embedded(settings.base_model):
        return _embedded_tokenizer(settings, progress)
    try:
        return _configured_tokenizer(settings, progress)
    except ModelLoadError as exc:
        if falls_back_to_embedded(settings, exc):
            log.warning("%s Using the embedded Gemma 3 270M's tokenizer.", exc)
            return _embedded_tokenizer(settings, progress)
        raise
    except Exception as exc:
        raise ModelLoadError(f"The tokenizer could not be loaded: {str(exc).splitlines()[0][:300]}") from None


def load_for_server(settings: Settings, progress: Progress | None = None) -> LoadedModel:
    """The tokenizer and a backend streaming from MEDCOT_SERVER_URL; no weights are loaded.

    An unreachable server is no load failure: the app comes up, its status line says why the server cannot answer,
    and the first request after the server is back is served.
    """
    progress = progress or log_progress
    if settings.server_url is None:
        raise ModelLoadError("MEDCOT_SERVER_URL is not set.")
    tokenizer = load_tokenizer_for_server(settings, progress)
    client = ServerClient(settings.server_url, settings.server_api_key)
    backend = ServerBackend(
        client, settings.server_model, settings.server_base_model, STOP_TEXTS, stop_token_ids(tokenizer, None)
    )
    try:
        backend.listed()
    except ServerError as exc:
        log.warning("%s", exc)  # the status line says so too; never the key (it is in no message)
    progress("Connected to the model server", 1.0)
    return LoadedModel(
        model=None,
        tokenizer=tokenizer,
        base_id=settings.server_base_model or "",
        adapter_id=settings.server_model,
        kind="server",
        merged=False,
        device=client.url,
        dtype="",
        notes=[f"Streaming from the model server at {client.url}; no weights are loaded here."],
        server=backend,
    )
