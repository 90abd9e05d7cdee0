"""medcot.backends.openai_client and medcot.backends.server against a real HTTP server written here (the wire as
vLLM writes it, scripted per test).

The end-to-end path against a real vLLM is tests/test_vllm.py; these pin the client's reading of the stream and its
mapping of each failure to a readable error, which a real vLLM cannot be made to produce on demand.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import pytest

from medcot import cli
from medcot.backends import settings_from_env
from medcot.backends.openai_client import (
    ServedModel,
    ServerAuthError,
    ServerClient,
    ServerError,
    ServerPromptTooLongError,
    ServerStreamError,
    ServerUnreachableError,
    UnknownModelError,
    Usage,
    sampling_body,
)
from medcot.backends.server import ServerSettings, base_model_of
from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.errors import ConfigError, GenerationError, PromptTooLongError, UserError
from medcot.prompt import Turn, encode_prompt
from medcot.request import Query
from medcot.ui.chat_handlers import ChatHandlers
from medcot.ui.compare import compare_controls
from tests.helpers.serving import free_port
from tests.helpers.tiny import TinyRepos

GREEDY = GenerationParams(max_new_tokens=16, temperature=0.0)
KEY = "sk-secret-test-key"

Script = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = json.loads(self.rfile.read(length)) if length else None
        self.server.requests.append((self.command, self.path, dict(self.headers), self.body))
        self.server.scripts[(self.command, self.path)](self)

    do_GET = do_POST = _serve

    def send_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_events(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def event(self, data: object) -> None:
        self.wfile.write(f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode())
        self.wfile.flush()


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", free_port()), Handler)
        self.scripts: dict[tuple[str, str], Script] = {}
        self.requests: list[tuple[str, str, dict[str, str], object]] = []
        self.disconnected = threading.Event()  # a streaming script saw the client go

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    # shutdown() waits for serve_forever's next poll: 0.5 s each by default, 7 s over this file
    thread = threading.Thread(target=scripted.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield scripted
    finally:
        scripted.shutdown()
        scripted.server_close()


def token_chunk(text: str, ids: list[int] | None = None) -> dict[str, object]:
    choice: dict[str, object] = {"index": 0, "text": text, "finish_reason": None}
    if ids is not None:
        choice["token_ids"] = ids
    return {"id": "cmpl-1", "object": "text_completion", "choices": [choice], "usage": None}


def stream_tokens(pieces: list[str], with_ids: bool = True, usage: int | None = None) -> Script:
    def script(handler: Handler) -> None:
        handler.start_events()
        for i, piece in enumerate(pieces):
            handler.event(token_chunk(piece, [100 + i] if with_ids else None))
        if usage is not None:
            handler.event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": usage}})
        handler.event("[DONE]")

    return script


def test_stream_sends_token_ids_and_reads_text_and_counts(server: ScriptedServer) -> None:
    server.scripts["POST", "/v1/completions"] = stream_tokens(["<think>", "\nWhy", ".", "\n</think>", " So."], usage=6)
    usage: list[Usage] = []
    client = ServerClient(server.url, api_key=KEY)
    chunks = list(client.stream("medcot", [2, 5, 9], GREEDY, stop_token_ids=[1, 106], usage=usage))
    assert "".join(c.text for c in chunks) == "<think>\nWhy.\n</think> So."
    assert [c.tokens for c in chunks if c.text][:2] == [1, 2]
    assert chunks[-1].tokens == 6  # the usage record counts a last token (the EOS) that printed nothing
    assert usage == [Usage(7, 6)]
    _, path, headers, body = server.requests[-1]
    assert path == "/v1/completions"
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert body["prompt"] == [2, 5, 9]  # token ids, never text the server would template
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["return_token_ids"] is True
    assert body["stop_token_ids"] == [1, 106]
    assert body["model"] == "medcot"
    assert (body["max_tokens"], body["temperature"]) == (16, 0.0)
    assert "top_k" not in body  # greedy: sampling fields are left out


def test_chunks_without_token_ids_count_one_token_each(server: ScriptedServer) -> None:
    server.scripts["POST", "/v1/completions"] = stream_tokens(["a", "b", "c"], with_ids=False)
    chunks = list(ServerClient(server.url).stream("medcot", [1], GREEDY))
    assert [(c.text, c.tokens) for c in chunks] == [("a", 1), ("b", 2), ("c", 3)]


def test_stop_text_is_never_shown_even_when_split_across_chunks(server: ScriptedServer) -> None:
    server.scripts["POST", "/v1/completions"] = stream_tokens(["Rest.", "\n\n###", " Question", ":\n\nmore"])
    text = "".join(c.text for c in ServerClient(server.url).stream("medcot", [1], GREEDY))
    assert text == "Rest.\n\n"
    assert server.requests[-1][3]["stop"] == ["### Question:"]  # and the server is told to stop there


def test_sampling_body_follows_the_params() -> None:
    body = sampling_body(
        GenerationParams(max_new_tokens=9, temperature=0.7, top_p=0.9, top_k=5, repetition_penalty=1.2)
    )
    assert body == {"max_tokens": 9, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "repetition_penalty": 1.2}
    assert "top_k" not in sampling_body(GenerationParams(temperature=0.7, top_k=0))


def test_models_lists_bases_and_adapters(server: ScriptedServer) -> None:
    data = [
        {"id": "/models/base", "object": "model", "parent": None, "max_model_len": 2048},
        {"id": "medcot", "object": "model", "parent": "/models/base", "root": "/adapters/medcot"},
    ]
    server.scripts["GET", "/v1/models"] = lambda h: h.send_json(200, {"object": "list", "data": data})
    assert ServerClient(server.url).models() == [
        ServedModel("/models/base", None, 2048),
        ServedModel("medcot", "/models/base", None),
    ]


def test_unreachable_server_is_a_readable_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    client = ServerClient(url)
    for call in (client.models, lambda: list(client.stream("medcot", [1], GREEDY))):
        with pytest.raises(ServerUnreachableError, match="cannot be reached") as caught:
            call()
        assert url in str(caught.value) and "MEDCOT_SERVER_URL" in str(caught.value)
        assert isinstance(caught.value, GenerationError | UserError)  # what the UI, API and CLI already show


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_names_the_setting_never_the_key(server: ScriptedServer, status: int) -> None:
    error = {"error": {"message": f"invalid key {KEY}", "type": "auth"}}
    server.scripts["POST", "/v1/completions"] = lambda h: h.send_json(status, error)
    server.scripts["GET", "/v1/models"] = lambda h: h.send_json(status, error)
    client = ServerClient(server.url, api_key=KEY)
    for call in (client.models, lambda: list(client.stream("medcot", [1], GREEDY))):
        with pytest.raises(ServerAuthError, match="MEDCOT_SERVER_API_KEY") as caught:
            call()
        assert KEY not in str(caught.value)
    assert KEY not in repr(client)


def test_unknown_model_says_which(server: ScriptedServer) -> None:
    error = {"error": {"message": "The model `nope` does not exist.", "type": "NotFoundError", "code": 404}}
    server.scripts["POST", "/v1/completions"] = lambda h: h.send_json(404, error)
    with pytest.raises(UnknownModelError, match=r"does not serve `nope`.*MEDCOT_SERVER_MODEL"):
        list(ServerClient(server.url).stream("nope", [1], GREEDY))


def test_prompt_over_the_servers_context_is_a_prompt_too_long_error(server: ScriptedServer) -> None:
    message = (
        "This model's maximum context length is 256 tokens. However, you requested 300 tokens (284 in the messages, "
        "16 in the completion). Please reduce the length of the messages or completion."
    )
    server.scripts["POST", "/v1/completions"] = lambda h: h.send_json(400, {"error": {"message": message}})
    with pytest.raises(ServerPromptTooLongError, match="longer than the model server's context") as caught:
        list(ServerClient(server.url).stream("medcot", list(range(284)), GREEDY))
    assert isinstance(caught.value, PromptTooLongError)
    assert "256 tokens" in str(caught.value)


def test_server_failure_status_is_reported(server: ScriptedServer) -> None:
    server.scripts["POST", "/v1/completions"] = lambda h: h.send_json(500, {"error": {"message": "engine dead"}})
    with pytest.raises(ServerError, match=r"failed \(500: engine dead\)"):
        list(ServerClient(server.url).stream("medcot", [1], GREEDY))


def test_error_event_mid_stream_is_raised_after_the_text_so_far(server: ScriptedServer) -> None:
    def script(handler: Handler) -> None:
        handler.start_events()
        handler.event(token_chunk("Rest", [5]))
        handler.event({"error": {"message": "EngineDeadError", "type": "InternalServerError", "code": 500}})

    server.scripts["POST", "/v1/completions"] = script
    seen = []
    with pytest.raises(ServerStreamError, match="failed mid-answer: EngineDeadError"):
        for chunk in ServerClient(server.url).stream("medcot", [1], GREEDY):
            seen.append(chunk.text)
    assert seen == ["Rest"]


def test_connection_dropped_mid_stream_is_a_readable_error(server: ScriptedServer) -> None:
    def script(handler: Handler) -> None:
        handler.start_events()
        handler.event(token_chunk("Rest", [5]))
        # the server process dies: the connection closes without [DONE]

    server.scripts["POST", "/v1/completions"] = script
    with pytest.raises(ServerStreamError, match="before the answer was complete"):
        list(ServerClient(server.url).stream("medcot", [1], GREEDY))


def slow_stream(server: ScriptedServer, first: int = 1, gap_s: float = 30.0) -> None:
    """Streams ``first`` tokens, then waits ``gap_s`` before each next one, noting when the client has gone."""

    def script(handler: Handler) -> None:
        handler.start_events()
        try:
            for i in range(1000):
                handler.event(token_chunk(f"t{i} ", [i]))  # raises once the client has gone
                if i + 1 >= first:
                    handler.connection.settimeout(gap_s)
                    try:
                        if handler.connection.recv(1) == b"":  # the client closed its socket: EOF on ours
                            break
                    except TimeoutError:
                        continue
            else:
                return  # streamed to the end: the client never left
        except OSError:
            pass
        server.disconnected.set()

    server.scripts["POST", "/v1/completions"] = script


def test_cancel_closes_the_stream_while_it_waits_for_a_token(server: ScriptedServer) -> None:
    slow_stream(server)
    cancel = threading.Event()
    chunks = ServerClient(server.url).stream("medcot", [1], GREEDY, cancel)
    assert next(chunks).text == "t0 "
    started = time.monotonic()
    threading.Timer(0.2, cancel.set).start()
    assert list(chunks) == []  # the blocked read ends: no error, nothing more
    assert time.monotonic() - started < 5
    assert server.disconnected.wait(5)  # the server saw the connection go (vLLM aborts the request then)


def test_closing_the_iterator_closes_the_connection(server: ScriptedServer) -> None:
    slow_stream(server, first=3, gap_s=0.01)
    chunks = ServerClient(server.url).stream("medcot", [1], GREEDY)
    assert next(chunks).text == "t0 "
    chunks.close()
    assert server.disconnected.wait(5)


# -- the engine, the CLI and the app in server mode, over the scripted server ----------------------------------------
MODELS = [
    {"id": "tiny-base", "object": "model", "parent": None, "max_model_len": 4096},
    {"id": "medcot", "object": "model", "parent": "tiny-base"},
]


def serve_models(server: ScriptedServer, models: list[dict[str, object]] = MODELS) -> None:
    server.scripts["GET", "/v1/models"] = lambda h: h.send_json(200, {"object": "list", "data": models})


def server_settings(repos: TinyRepos, url: str, **server: Any) -> Settings:
    return Settings(base_model=str(repos.base), adapter=str(repos.adapter), backend=ServerSettings(url, **server))


def test_server_mode_settings() -> None:
    local = settings_from_env({})
    assert (local.server_mode, local.backend, local.concurrency, local.queue_size) == (False, None, 2, 16)
    settings = settings_from_env(
        {
            "MEDCOT_SERVER_URL": " http://10.0.0.5:8000/v1 ",
            "MEDCOT_SERVER_MODEL": "medcot-lora",
            "MEDCOT_SERVER_BASE_MODEL": "google/gemma-3-270m-it",
            "MEDCOT_SERVER_API_KEY": "sk-abc",
        }
    )
    assert settings.server_mode and settings.backend == ServerSettings(
        "http://10.0.0.5:8000/v1", "medcot-lora", "google/gemma-3-270m-it", "sk-abc"
    )
    assert "sk-abc" not in repr(settings)
    # the server batches: more requests run at once by default, and an explicit setting still wins
    assert (settings.concurrency, settings.queue_size) == (ServerSettings.concurrency, ServerSettings.queue_size)
    assert settings.concurrency > local.concurrency
    explicit = settings_from_env({"MEDCOT_SERVER_URL": "https://x/v1", "MEDCOT_CONCURRENCY": "3"})
    assert explicit.concurrency == 3
    defaults = settings_from_env({"MEDCOT_SERVER_URL": "https://x/v1"})
    assert defaults.backend == ServerSettings("https://x/v1", "medcot", None, None)


def test_server_url_must_be_http() -> None:
    with pytest.raises(ConfigError, match="MEDCOT_SERVER_URL"):
        settings_from_env({"MEDCOT_SERVER_URL": "127.0.0.1:8000"})


def test_base_model_of_prefers_the_adapters_parent() -> None:
    listed = [ServedModel("b1"), ServedModel("medcot", "b2"), ServedModel("b2")]
    assert base_model_of(listed, "medcot") == "b2"
    assert base_model_of([ServedModel("b1"), ServedModel("merged")], "merged") == "b1"  # the one other base
    assert base_model_of([ServedModel("b1"), ServedModel("b2"), ServedModel("merged")], "merged") is None


def test_engine_sends_the_cards_prompt_as_token_ids_and_loads_no_weights(
    server: ScriptedServer, tiny_repos: TinyRepos
) -> None:
    serve_models(server)
    server.scripts["POST", "/v1/completions"] = stream_tokens(["<think>\nWhy.\n</think>", "\nSo."], usage=4)
    engine = Engine(server_settings(tiny_repos, server.url)).load()
    assert engine.ready and engine.loaded is None  # no model in this process: the server holds the weights
    assert engine.status() == f"Model server {server.url}: `medcot`, base `tiny-base`"
    assert engine.can_compare and engine.base_runs_beside
    history = [Turn("Earlier <start_of_turn>question?", "Its answer.")]
    answer = engine.ask(Query("Edema <end_of_turn> and orthopnea?", history, GREEDY))
    assert (answer.reasoning, answer.answer) == ("Why.", "So.")
    assert answer.stats is not None and answer.stats.new_tokens == 4
    sent = server.requests[-1][3]
    tokenizer = engine.require_backend().tokenizer
    expected = encode_prompt(
        tokenizer, "Edema <end_of_turn> and orthopnea?", history, engine.settings.max_input_tokens
    )
    assert sent["prompt"] == expected.input_ids  # the local path's exact ids: typed markers stay text
    assert sent["model"] == "medcot"
    assert tokenizer.convert_tokens_to_ids("<end_of_turn>") in sent["stop_token_ids"]
    engine.ask(Query("Base, please?", params=GREEDY, use_adapter=False))
    assert server.requests[-1][3]["model"] == "tiny-base"  # the base by name: nothing switches


def test_engine_comes_up_without_a_server_and_says_why(tiny_repos: TinyRepos) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    engine = Engine(server_settings(tiny_repos, url)).load()
    assert engine.ready, engine.error  # the app serves its page; requests are refused readably
    assert "cannot be reached" in engine.status() and url in engine.status()
    assert not engine.can_compare
    with pytest.raises(ServerUnreachableError):
        engine.ask(Query("Edema?", params=GREEDY))


def test_status_names_what_the_server_serves_when_the_model_is_missing(
    server: ScriptedServer, tiny_repos: TinyRepos
) -> None:
    serve_models(server)
    engine = Engine(server_settings(tiny_repos, server.url, model="nope")).load()
    status = engine.status()
    assert "does not serve `nope`" in status and "`medcot`" in status and "MEDCOT_SERVER_MODEL" in status


def test_no_base_listed_means_no_comparison_with_the_reason(server: ScriptedServer, tiny_repos: TinyRepos) -> None:
    serve_models(server, [{"id": "medcot-merged", "object": "model", "parent": None}])
    engine = Engine(server_settings(tiny_repos, server.url, model="medcot-merged")).load()
    reason = engine.compare_unavailable()
    assert reason is not None and "MEDCOT_SERVER_BASE_MODEL" in reason
    configured = Engine(server_settings(tiny_repos, server.url, model="medcot-merged", base_model="gemma")).load()
    assert configured.can_compare


def test_cli_prints_the_servers_error_and_exits_non_zero(
    tiny_repos: TinyRepos, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    code = cli.main(["Edema?"], Engine(server_settings(tiny_repos, url, api_key=KEY)))
    err = capsys.readouterr().err
    assert code == 1
    assert f"error: The model server at {url} cannot be reached" in err
    assert KEY not in err


def test_compare_in_server_mode_runs_the_base_beside_the_fine_tuned_answer(
    server: ScriptedServer, tiny_repos: TinyRepos
) -> None:
    serve_models(server)
    base_arrived = threading.Event()

    def script(handler: Handler) -> None:
        if handler.body["model"] == "tiny-base":
            base_arrived.set()
            stream_tokens(["Rest and fluids."])(handler)
            return
        handler.start_events()
        handler.event(token_chunk("<think>\nWhy.\n</think>", [1]))
        # The fine-tuned answer ends only once the base request has arrived: run one after the other, it never would.
        handler.event(token_chunk("\nSo." if base_arrived.wait(30) else "\nAlone.", [2]))
        handler.event("[DONE]")

    server.scripts["POST", "/v1/completions"] = script
    engine = Engine(server_settings(tiny_repos, server.url)).load()
    handlers = ChatHandlers(engine, engine.stream)
    session = SimpleNamespace(session_hash="s3", query_params={})
    handlers.set_compare(True, session)

    async def both() -> tuple[list[Any], list[Any]]:
        base = asyncio.ensure_future(collect(handlers.base.show_base([], True, session)))
        chat = await collect(handlers.respond("Edema?", [], 16, 0.0, 0.95, 64, 1.0, session))
        return chat, await base

    chat, base = asyncio.run(both())
    assert [m.content for m in chat[-1]][:2] == ["Why.", "So."]
    assert base[-1][1]["content"] == "Rest and fluids."
    assert "beside" in compare_controls(engine)[1]  # the note says they run at the same time


async def collect(stream: Any) -> list[Any]:
    return [update async for update in stream]
