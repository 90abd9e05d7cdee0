"""The wire to an OpenAI-compatible server (vLLM): a token-id prompt in, streamed text chunks out, readable errors.

The prompt goes as token ids (``/v1/completions``), rendered by the local tokenizer as the local path does, so user
text never becomes control tokens. Not the OpenAI SDK: its Stream cannot be woken from another thread either (Stop
would still shut its socket, _close_on_cancel), and its pydantic models hide vLLM's extra ``token_ids``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource, SSEError

from medcot.chunks import Chunk, StopTextFilter
from medcot.config import GenerationParams
from medcot.errors import GenerationError, PromptTooLongError
from medcot.prompt import STOP_TEXTS

CONNECT_TIMEOUT_S = 5.0
# Between two streamed chunks: a batching server may queue a request for a while before its first token.
READ_TIMEOUT_S = 300.0
CANCEL_POLL_S = 0.05  # how soon Stop closes a stream that is waiting for its next chunk


class ServerError(GenerationError):
    """The server could not answer; the message says why in words a user (or an operator) can act on."""


class ServerUnreachableError(ServerError):
    pass


class ServerAuthError(ServerError):
    pass


class UnknownModelError(ServerError):
    pass


class ServerPromptTooLongError(ServerError, PromptTooLongError):
    """The server refused the prompt as longer than its context (caught as PromptTooLongError too)."""


class ServerStreamError(ServerError):
    """The stream broke after it started: the server failed, restarted or dropped the connection."""


@dataclass(frozen=True)
class ServedModel:
    """One entry of ``/v1/models``: a base (``parent`` None) or a LoRA adapter served on top of ``parent``."""

    id: str
    parent: str | None = None
    max_model_len: int | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def _message_of(error: object) -> str:
    """The server's own message from an error (OpenAI shape ``{"message"}``, or vLLM's older ``{"detail"}``)."""
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    return str(error)[:300]


_CONTEXT_WORDS = ("context length", "maximum context", "max_model_len", "too long", "too many")


def error_for_response(response: httpx.Response, url: str, model: str | None = None) -> ServerError:
    """The readable error for an HTTP error response from the server at ``url``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:300]
    else:
        text = _message_of(body.get("error", body) if isinstance(body, dict) else body)
    if status in (401, 403):
        return ServerAuthError(
            f"The model server at {url} refused the request ({status}): check MEDCOT_SERVER_API_KEY."
        )
    if status == 404 or (status == 400 and model and "does not exist" in text):
        return UnknownModelError(
            f"The model server at {url} does not serve `{model}` ({status}: {text}). Check MEDCOT_SERVER_MODEL / "
            "MEDCOT_SERVER_BASE_MODEL against the server's /v1/models."
        )
    if status in (400, 413) and any(word in text.lower() for word in _CONTEXT_WORDS):
        return ServerPromptTooLongError(
            f"The question and conversation are longer than the model server's context ({text}). Ask a shorter "
            "question or start a new conversation."
        )
    if status >= 500:
        return ServerError(f"The model server at {url} failed ({status}: {text}). Please try again.")
    return ServerError(f"The model server at {url} refused the request ({status}: {text}).")


def sampling_body(params: GenerationParams) -> dict[str, Any]:
    """Sampling fields as vLLM reads them; temperature 0 is greedy there too (top_k and top_p then do nothing)."""
    body: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": params.temperature}
    if params.temperature > 0:
        body["top_p"] = params.top_p
        if params.top_k > 0:
            body["top_k"] = params.top_k  # vLLM's extension of the OpenAI API
    if params.repetition_penalty != 1.0:
        body["repetition_penalty"] = params.repetition_penalty  # likewise
    return body


def _close_on_cancel(response: httpx.Response, cancel: threading.Event) -> threading.Event:
    """Shuts a streamed response's socket down once ``cancel`` is set, also while the reader waits for a chunk, until
    the returned event is set. vLLM aborts the request when the socket closes; a plain close from another thread
    does not wake a blocked read on Linux, shutdown() does."""
    sock: socket.socket | None = None
    stream = response.extensions.get("network_stream")
    with contextlib.suppress(Exception):
        sock = stream.get_extra_info("socket") if stream is not None else None
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if cancel.wait(CANCEL_POLL_S):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)
                return

    threading.Thread(target=watch, name="medcot-server-cancel", daemon=True).start()
    return done


class ServerClient:
    """A connection pool to one OpenAI-compatible server; safe to share between threads (httpx.Client is)."""

    def __init__(self, url: str, api_key: str | None = None, read_timeout: float = READ_TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(read_timeout, connect=CONNECT_TIMEOUT_S),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    def __repr__(self) -> str:  # never the key
        return f"ServerClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: httpx.HTTPError) -> ServerUnreachableError:
        return ServerUnreachableError(
            f"The model server at {self.url} cannot be reached ({type(exc).__name__}). Check MEDCOT_SERVER_URL and "
            "that the server is running."
        )

    def models(self) -> list[ServedModel]:
        """What the server serves (``GET /models``)."""
        try:
            response = self._http.get("/models", timeout=httpx.Timeout(10.0, connect=CONNECT_TIMEOUT_S))
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise error_for_response(response, self.url)
        try:
            entries = [entry for entry in response.json()["data"] if isinstance(entry, dict)]
            return [ServedModel(str(e["id"]), e.get("parent"), e.get("max_model_len")) for e in entries]
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"{self.url}/models did not answer as an OpenAI-compatible server does.") from None

    def stream(
        self,
        model: str,
        prompt_ids: Sequence[int],
        params: GenerationParams,
        cancel: threading.Event | None = None,
        stop_texts: Sequence[str] = STOP_TEXTS,
        stop_token_ids: Sequence[int] = (),
        usage: list[Usage] | None = None,
    ) -> Iterator[Chunk]:
        """Yield text chunks with the count of tokens generated so far, as the server streams them.

        Closing the iterator or setting ``cancel`` closes the HTTP stream (the server aborts the request). The count
        is the chunks' token ids (vLLM's ``return_token_ids``; else one a chunk) or the final usage record, which is
        also appended to ``usage``. Generation ends where the model starts one of ``stop_texts``, never yielded.
        """
        body = {
            "model": model,
            "prompt": list(prompt_ids),
            "stream": True,
            "stream_options": {"include_usage": True},
            "return_token_ids": True,
            "stop": list(stop_texts),
            **({"stop_token_ids": list(stop_token_ids)} if stop_token_ids else {}),
            **sampling_body(params),
        }
        cancel = cancel if cancel is not None else threading.Event()
        shown = StopTextFilter(stop_texts)
        tokens = counted = 0
        try:
            with self._http.stream("POST", "/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_for_response(response, self.url, model)
                watch_done = _close_on_cancel(response, cancel)
                try:
                    for data in _events(response):
                        if cancel.is_set():
                            break
                        if "error" in data:  # vLLM reports a failure after the stream began this way
                            raise ServerStreamError(
                                f"The model server failed mid-answer: {_message_of(data['error'])}"
                            )
                        if reported := data.get("usage"):
                            tokens = max(tokens, int(reported.get("completion_tokens") or 0))
                            if usage is not None:
                                usage.append(Usage(reported["prompt_tokens"], reported["completion_tokens"]))
                        for choice in data.get("choices") or []:
                            ids = choice.get("token_ids")
                            tokens += len(ids) if isinstance(ids, list) else 1
                            if text := shown.feed(choice.get("text") or ""):
                                counted = tokens
                                yield Chunk(text, tokens)
                        if shown.stopped:  # a server that ignored "stop": closing the stream aborts it
                            break
                finally:
                    watch_done.set()
        except (httpx.HTTPError, ServerStreamError) as exc:
            if cancel.is_set():
                return  # the stream was closed on purpose (Stop): whatever broke after that is no error
            if isinstance(exc, ServerStreamError):
                raise
            if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                raise self._unreachable(exc) from None
            raise ServerStreamError(
                f"The connection to the model server at {self.url} broke mid-answer ({type(exc).__name__}). "
                "Please try again."
            ) from None
        if cancel.is_set():
            return
        if text := shown.close():
            counted = tokens
            yield Chunk(text, tokens)
        if tokens > counted:  # tokens that print nothing (the EOS) still count
            yield Chunk("", tokens)


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON objects of the server-sent event stream, up to ``data: [DONE]``; a stream cut short raises."""
    try:
        for event in EventSource(response).iter_sse():
            if event.data == "[DONE]":
                return
            try:
                data = event.json()
            except ValueError:
                raise ServerStreamError(f"The model server sent an unreadable event: {event.data[:100]!r}") from None
            if isinstance(data, dict):
                yield data
    except SSEError as exc:
        raise ServerStreamError(f"The model server did not stream server-sent events ({exc}).") from None
    raise ServerStreamError("The model server ended the stream before the answer was complete.")
