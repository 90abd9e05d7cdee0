"""app.py run as a ZeroGPU Space runs it: the real `spaces` in ZeroGPU mode, over a device API served here.

The app runs in a subprocess started through tests/helpers/zerogpu_space.py, which replaces only the GPU steps a
CPU-only torch cannot do (see its docstring). Everything else is the real thing: spaces' CUDA emulation while the
model loads, its launch-time packing and startup report, `/schedule` → forked worker → `/allow` → `/release` for each
request, its worker protocol (only gr.Error crosses back readable), Gradio's queue, and gradio_client over HTTP.

The stand-in device API records every call. The tiny base's weights are left random, so that the base model (adapter
off) writes newlines to the token limit: a base answer long enough to stop; the adapter answers as the card does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from gradio_client import Client

from medcot import zerogpu
from tests.helpers.serving import free_port
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, QUESTIONS, TinyRepos
from tests.helpers.tiny_cache import cached_repos

pytestmark = pytest.mark.zerogpu  # an app start under spaces: about a minute on 2 cores (CI runs it too)

ROOT = Path(__file__).resolve().parents[1]
GREEDY = (0.0, 0.95, 64, 1.0)  # temperature, top_p, top_k, repetition_penalty (after max_new_tokens)
START_TIMEOUT_S = 600  # import + load + launch on a busy 2-core machine


@dataclass
class Call:
    path: str
    params: dict[str, str]
    at: float


@dataclass
class DeviceAPI:
    """ZeroGPU's device API as spaces talks to it: one GPU, every call recorded.

    `/schedule` answers at once unless `hold` is cleared: then it queues the request as the real API does (an
    event stream of pings) until `hold` is set again.
    """

    calls: list[Call] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    idle: bool = False  # the GPU's last task ended well: spaces may reuse its worker
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.hold.set()

    def record(self, path: str, params: dict[str, str]) -> Call:
        call = Call(path, params, time.monotonic())
        with self.lock:
            self.calls.append(call)
        return call

    def of(self, path: str) -> list[Call]:
        with self.lock:
            return [call for call in self.calls if call.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 60) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.of(path)) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        calls = self.of(path)
        assert len(calls) >= count, f"{path}: {len(calls)} calls, expected {count}: {self.calls}"
        return calls

    def grant(self, schedule: Call) -> dict[str, Any]:
        """A GPU for a /schedule call; its allow token is kept with the call."""
        schedule.params["granted"] = token = uuid.uuid4().hex
        with self.lock:
            idle = self.idle
        return {"idle": idle, "nvidiaIndex": 0, "nvidiaUUID": "GPU-stand-in", "allowToken": token}

    def release_of(self, schedule: Call, timeout: float = 30) -> Call:
        """The /release call of a scheduled request (waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            token = schedule.params.get("granted")
            calls = [call for call in self.of("/release") if token and call.params["allowToken"] == token]
            if calls:
                return calls[0]
            time.sleep(0.005)
        raise AssertionError(f"GPU never released: {self.calls}")

    def released(self, failed: bool) -> None:
        with self.lock:
            self.idle = not failed


def handler_for(api: DeviceAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query))
            call = api.record(url.path, params)
            if url.path == "/schedule":
                self.schedule(call)
                return
            if url.path == "/release":
                api.released(params.get("fail") == "true")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def schedule(self, call: Call) -> None:
            if api.hold.is_set():
                body = json.dumps(api.grant(call)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may leave the queue
                while not api.hold.wait(0.1):
                    self.wfile.write(b"event: ping\n\n")
                    self.wfile.flush()
                time.sleep(0.05)
                self.wfile.write(f"event: succeeded\ndata: {json.dumps(api.grant(call))}\n\n".encode())
                self.wfile.flush()
            self.close_connection = True

    return Handler


@dataclass
class Space:
    url: str
    api: DeviceAPI
    process: subprocess.Popen[bytes]
    log: Path
    report: Path

    def client(self) -> Client:
        return Client(self.url, verbose=False)


@pytest.fixture(scope="module")
def repos(tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TinyRepos:
    return cached_repos(tiny_cache_dir, tmp_path_factory.mktemp("zerogpu-repos"), train_base=False)


@pytest.fixture(scope="module")
def space(repos: TinyRepos, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Space]:
    work = tmp_path_factory.mktemp("zerogpu-space")
    api = DeviceAPI()
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(api))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cgroup = work / "cgroup"
    cgroup.write_text("12:devices:/kubepods/pod-stand-in/medcot\n")
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SPACES_ZERO_GPU": "true",
        "SPACES_ZERO_DEVICE_API_URL": f"http://127.0.0.1:{server.server_port}",
        "ZEROGPU_PROC_SELF_CGROUP_PATH": str(cgroup),
        "ZEROGPU_OFFLOAD_DIR": str(work / "offload"),
        "ZEROGPU_TEST_REPORT": str(work / "packed.json"),
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
        "MEDCOT_BASE_MODEL": str(repos.base),
        "MEDCOT_ADAPTER": str(repos.adapter),
        "MEDCOT_DTYPE": "float32",  # the tiny models' greedy answers are those of their f32 training
    }
    log = work / "app.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "helpers" / "zerogpu_space.py"), str(ROOT / "app.py")],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its forked GPU workers go with it at the end
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the app exited ({process.returncode}):\n{log.read_text()[-6000:]}"
            assert time.monotonic() < deadline, f"the app did not start:\n{log.read_text()[-6000:]}"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        yield Space(url, api, process, log, work / "packed.json")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        server.shutdown()


def chat(client: Client, question: str, max_new_tokens: int = 64) -> Any:
    return client.submit(question, max_new_tokens, *GREEDY, api_name="/chat")


def text_of(content: Any) -> str:
    """A message's text in any of Gradio's shapes (a string, a list of text blocks)."""
    if isinstance(content, list):
        return "".join(text_of(part) for part in content)
    return content.get("text", "") if isinstance(content, dict) else str(content)


def answer_of(messages: list[dict[str, Any]]) -> str:
    texts = [text_of(m["content"]) for m in messages if not m.get("metadata")]
    return next(text for text in texts if not text.startswith("<sub>"))


def grants(api: DeviceAPI) -> int:
    return len(api.of("/schedule"))


def test_the_model_loads_onto_emulated_cuda_at_import(space: Space) -> None:
    packed = json.loads(space.report.read_text())  # written when launch() packed the CUDA tensors
    assert packed["tensors"] > 0 and packed["bytes"] > 0, space.log.read_text()[-3000:]
    assert space.api.calls[0].path == "/startup-report"  # at launch, before any request


def test_chat_streams_reasoning_and_answer_out_of_the_forked_worker(space: Space) -> None:
    before = grants(space.api)
    updates = list(chat(space.client(), QUESTIONS[0]))
    pending = [u for u in updates if u and u[0]["metadata"].get("status") == "pending"]
    assert pending, updates
    reasoning = updates[-1][0]
    assert reasoning["metadata"]["status"] == "done" and reasoning["content"] == ADAPTER_REASONING
    assert answer_of(updates[-1]) == ADAPTER_ANSWER, space.log.read_text()[-3000:]
    schedule = space.api.wait_for("/schedule", before + 1)[before]
    assert space.api.release_of(schedule).params["fail"] == "false"
    allow = next(call for call in space.api.of("/allow") if call.params["allowToken"] == schedule.params["granted"])
    assert int(allow.params["pid"]) != space.process.pid  # the answer came from a forked worker


def test_ask_answers(space: Space) -> None:
    before = grants(space.api)
    text = space.client().predict(QUESTIONS[1], 64, *GREEDY, True, api_name="/ask")
    assert text.endswith(f"Answer:\n{ADAPTER_ANSWER}") and ADAPTER_REASONING in text
    schedule = space.api.wait_for("/schedule", before + 1)[before]
    assert space.api.release_of(schedule).params["fail"] == "false"


def compare_jobs(client: Client, question: str, max_new_tokens: int) -> tuple[Any, Any]:
    """The page's comparison as a browser drives it: tick the checkbox, then the chat and the base column."""
    client.predict(True, api_name="/set_compare")
    base = client.submit([], True, api_name="/show_base")
    return chat(client, question, max_new_tokens), base


def test_the_base_model_comparison_runs_with_the_adapter_off(space: Space) -> None:
    before = grants(space.api)
    adapter_job, base_job = compare_jobs(space.client(), QUESTIONS[2], 64)
    assert answer_of(adapter_job.result()) == ADAPTER_ANSWER
    base = base_job.result()
    assert [m["role"] for m in base][:1] == ["user"] and text_of(base[0]["content"]) == QUESTIONS[2]
    shown = " ".join(text_of(m["content"]) for m in base[1:])
    assert ADAPTER_ANSWER not in shown and "64 tokens" in shown  # the random base writes to the limit
    schedules = space.api.wait_for("/schedule", before + 2)[before:]
    assert all(space.api.release_of(s).params["fail"] == "false" for s in schedules)


def test_a_blank_question_is_refused_readably_without_a_gpu(space: Space) -> None:
    before = len(space.api.calls)
    client = space.client()
    with pytest.raises(Exception, match="Please type a question"):
        chat(client, "   ").result()
    with pytest.raises(Exception, match="Please type a question"):
        client.predict("", 64, *GREEDY, False, api_name="/ask")
    assert space.api.calls[before:] == []


def test_the_duration_asked_follows_max_new_tokens(space: Space) -> None:
    before = grants(space.api)
    for tokens in (8, 1024):
        chat(space.client(), QUESTIONS[0], tokens).result()
    asked = [int(call.params["durationSeconds"]) for call in space.api.wait_for("/schedule", before + 2)[before:]]
    expected = [zerogpu.gpu_seconds(n) for n in (8, 1024)]
    assert asked == expected and expected[0] < expected[1]


def test_stop_closes_the_workers_generator_and_releases_the_gpu(space: Space) -> None:
    before = grants(space.api)
    adapter_job, base_job = compare_jobs(space.client(), QUESTIONS[0], 4096)
    schedule = space.api.wait_for("/schedule", before + 2)[before + 1]  # the base answer's: 4096 tokens to write
    time.sleep(0.5)
    assert not adapter_job.done()
    adapter_job.cancel()
    stopped = time.monotonic()
    release = space.api.release_of(schedule)
    assert release.at - stopped < 1.0 and release.params["fail"] == "false"
    base_job.result(timeout=30)
    # The worker is sound: the next request reuses it and answers.
    assert answer_of(chat(space.client(), QUESTIONS[1]).result()) == ADAPTER_ANSWER


def test_stop_while_waiting_for_a_gpu_ends_at_once(space: Space) -> None:
    before = grants(space.api)
    space.api.hold.clear()  # the device API queues the next request
    try:
        job = chat(space.client(), QUESTIONS[0], 4096)
        schedule = space.api.wait_for("/schedule", before + 1)[before]
        time.sleep(0.3)
        job.cancel()
        stopped = time.monotonic()
        while not job.done() and time.monotonic() - stopped < 5:
            time.sleep(0.01)
        assert job.done() and time.monotonic() - stopped < 1.0
    finally:
        space.api.hold.set()
    # The GPU that comes after the Stop goes back at once, unused.
    assert space.api.release_of(schedule).at - schedule.at < 30
    assert answer_of(chat(space.client(), QUESTIONS[1]).result()) == ADAPTER_ANSWER
