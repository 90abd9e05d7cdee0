"""The server-mode backend: the card's prompt as token ids to a model server (vLLM), the base by name beside it.

The wire itself (the streamed completions, the errors) is medcot.backends.openai_client.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence

from medcot.backends.openai_client import ServedModel, ServerClient, ServerError, UnknownModelError
from medcot.chunks import Chunk
from medcot.config import GenerationParams


def base_model_of(models: Sequence[ServedModel], model: str) -> str | None:
    """The served base to compare ``model`` with: its LoRA parent, else the one base listed beside it."""
    for entry in models:
        if entry.id == model and entry.parent:
            return entry.parent
    bases = [entry.id for entry in models if not entry.parent and entry.id != model]
    return bases[0] if len(bases) == 1 else None


class ServerBackend:
    """The Backend of server mode: adapter requests go to ``model``, base requests to the base by name.

    Nothing switches: the server holds both (a LoRA beside its base), so base and adapter answers run at once.
    What the server lists is read again at most every ``MODELS_TTL_S``, so the status line follows a server that
    comes, goes or changes what it serves, without a request to /v1/models for each question.
    """

    MODELS_TTL_S = 5.0

    def __init__(
        self,
        client: ServerClient,
        model: str,
        base_model: str | None,
        stop_texts: Sequence[str],
        stop_token_ids: Sequence[int],
    ) -> None:
        self.client = client
        self.model = model
        self.configured_base = base_model
        self.stop_texts = tuple(stop_texts)
        self.stop_token_ids = tuple(stop_token_ids)
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

    def stream(
        self, input_ids: Sequence[int], params: GenerationParams, cancel: threading.Event, use_adapter: bool
    ) -> Iterator[Chunk]:
        model = self.model if use_adapter else self.base_model()
        if model is None:
            raise UnknownModelError(self.compare_unavailable() or "The server lists no base model.")
        if cancel.is_set():
            return
        chunks = self.client.stream(model, input_ids, params, cancel, self.stop_texts, self.stop_token_ids)
        try:
            yield from chunks
        finally:
            chunks.close()
