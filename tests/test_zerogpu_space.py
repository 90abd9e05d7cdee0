"""app.py run as a ZeroGPU Space runs it: the real `spaces` in ZeroGPU mode, over a device API served here.

The app runs in a subprocess started through tests/helpers/zerogpu_space.py, which replaces only the GPU steps a
CPU-only torch cannot do (see its docstring). Everything else is the real thing: spaces' CUDA emulation while the
model loads, its launch-time packing and startup report, `/schedule` → forked worker → `/allow` → `/release` for each
request, its worker protocol (only gr.Error crosses back readable), Gradio's queue, and gradio_client over HTTP.

The stand-in device API records every call, and refuses a /schedule or cuts a request that runs past its asked
duration when a test tells it to, as the real API does. The tiny base's weights are left random, so that the base
model (adapter off) writes newlines to the token limit: a base answer long enough to stop; the adapter answers as the
card does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import os
import re
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
from gradio_client.exceptions import AppError

from benchmarks.client import parse_stats
from medcot import gpu_budget, gpu_refusals, zerogpu
from medcot.ui.stats_line import STATS_PREFIX
from tests.helpers.serving import free_port
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, QUESTIONS, TinyRepos
from tests.helpers.tiny_cache import cached_repos

pytestmark = pytest.mark.zerogpu  # an app start under spaces: about a minute on 2 cores (CI runs it too)

ROOT = Path(__file__).resolve().parents[1]
ASK = re.compile(r"^ZeroGPU: asking (\d+) s for up to (\d+) tokens \((.*)\)", re.MULTILINE)
MEASURED = re.compile(r"over (\d+) answer\(s\): start-up (\S+) s, first token (\S+) s, (\S+) s a token")
GREEDY = (0.0, 0.95, 64, 1.0)  # temperature, top_p, top_k, repetition_penalty (after max_new_tokens)
START_TIMEOUT_S = 600  # import + load + the step's compile ahead of time + launch on a busy 2-core machine
STARTUP_TASKS = 1  # GPU tasks the app runs at import, before any request: the decode step's compile


@dataclass
class Call:
    path: str
    params: dict[str, str]
    at: float


@dataclass
class DeviceAPI:
    """ZeroGPU's device API as spaces talks to it: one GPU, every call recorded.

    `/schedule` answers at once unless `hold` is cleared: then it queues the request as the real API does (an
    event stream of pings) until `hold` is set again. A kind put in `refusals` makes the next `/schedule` refuse,
    in the shape spaces/zero/api.py reads: "quota" (429 with the quota left and the wait), "no-gpu" (503), "queue-
    timeout" (a queue event stream that fails). With `cut_overruns` set, a request still holding the GPU when its
    `durationSeconds` are over has its worker killed, as ZeroGPU ends a task that runs past its duration.
    """

    calls: list[Call] = field(default_factory=list)
    hold: threading.Event = field(default_factory=threading.Event)
    idle: bool = False  # the GPU's last task ended well: spaces may reuse its worker
    lock: threading.Lock = field(default_factory=threading.Lock)
    refusals: list[str] = field(default_factory=list)
    cut_overruns: bool = False

    QUOTA_LEFT_S = 20
    QUOTA_WAIT_S = 271  # "Try again in 0:04:31" in spaces' words, "4 min 31 s" in the app's

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

    def refusal(self) -> str | None:
        with self.lock:
            return self.refusals.pop(0) if self.refusals else None

    def worker_pid(self) -> int:
        """The GPU worker's process: the last one spaces allowed on the GPU (a reused worker is not allowed again)."""
        return int(self.of("/allow")[-1].params["pid"])

    def grant(self, schedule: Call) -> dict[str, Any]:
        """A GPU for a /schedule call; its allow token is kept with the call."""
        schedule.params["granted"] = token = uuid.uuid4().hex
        with self.lock:
            idle = self.idle
            cut = self.cut_overruns
        if cut:
            timer = threading.Timer(float(schedule.params["durationSeconds"]), self.cut, (token,))
            timer.daemon = True
            timer.start()
        return {"idle": idle, "nvidiaIndex": 0, "nvidiaUUID": "GPU-stand-in", "allowToken": token}

    def cut(self, token: str) -> None:
        if not any(call.params["allowToken"] == token for call in self.of("/release")):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.worker_pid(), signal.SIGKILL)

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
            refusal = api.refusal()
            if refusal is not None:
                self.refuse(refusal)
                return
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

        def refuse(self, kind: str) -> None:
            if kind == "queue-timeout":
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                for event in (b"event: ping\n\n", b"event: failed\n\n"):
                    self.wfile.write(event)
                    self.wfile.flush()
                    time.sleep(0.05)
                self.close_connection = True
                return
            if kind == "no-gpu":
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            assert kind == "quota", kind
            body = json.dumps({"left": api.QUOTA_LEFT_S, "wait": api.QUOTA_WAIT_S}).encode()
            self.send_response(429)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Approve-Result", "quota-exceeded")
            self.end_headers()
            self.wfile.write(body)

    return Handler


@dataclass
class Space:
    url: str
    api: DeviceAPI
    process: subprocess.Popen[bytes]
    log: Path
    report: Path

    def client(self, **headers: str) -> Client:
        return Client(self.url, verbose=False, headers=headers or None)

    def asks(self) -> list[re.Match[str]]:
        """The app's log lines of the durations asked, in order (tests/helpers/zerogpu_space.py logs them)."""
        return list(ASK.finditer(self.log.read_text(errors="replace")))


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


def stats_of(messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The figures of an answer's stats line (tok/s to 0.1, time to first token to 0.01 s)."""
    return parse_stats(next(t for t in map(text_of, (m["content"] for m in messages)) if t.startswith(STATS_PREFIX)))


def figures_of(ask: re.Match[str]) -> gpu_budget.Figures:
    """The figures a logged ask came from."""
    measured = MEASURED.search(ask.group(3))
    assert measured is not None, ask.group(0)
    answers, startup, first_token, per_token = measured.groups()
    return gpu_budget.Figures(float(startup), float(first_token), float(per_token), int(answers), measured=True)


def ip_token() -> str:
    """An X-IP-Token as the Hub's proxy adds to a visitor's requests (a JWT; spaces only reads its payload)."""
    parts = ({"alg": "none"}, {"ip": "127.0.0.1"})
    return ".".join([*(base64.urlsafe_b64encode(json.dumps(p).encode()).decode().rstrip("=") for p in parts), "x"])


def refused(call: Any) -> AppError:
    with pytest.raises(AppError) as raised:
        call()
    return raised.value


def assert_readable(error: AppError) -> None:
    assert "<" not in error.message and "](" not in error.message, error.message  # no HTML, no Markdown link
    assert "worker error" not in f"{error.title} {error.message}" and "Error" not in error.message


def test_the_model_loads_onto_emulated_cuda_at_import_and_its_step_compiles_ahead_on_a_gpu(space: Space) -> None:
    packed = json.loads(space.report.read_text())  # written when launch() packed the CUDA tensors
    assert packed["tensors"] > 0 and packed["bytes"] > 0, space.log.read_text()[-3000:]
    # At import: one GPU task compiles the decode step (spaces.aoti_compile in a forked worker; here for the CPU);
    # then, at launch and before any request, the startup report.
    assert [call.path for call in space.api.calls[:4]] == ["/schedule", "/allow", "/release", "/startup-report"]
    assert int(space.api.calls[0].params["durationSeconds"]) == zerogpu.AOT_COMPILE_S
    assert space.api.calls[2].params.get("fail") != "true"  # released as done
    assert "ZeroGPU: decoding with the static step (compiled ahead of time in" in space.log.read_text()


def test_the_duration_asked_is_the_prior_until_an_answer_is_measured_then_the_measured_speed(space: Space) -> None:
    """The first request of the Space asks the prior; the next ones what the answers before them measured."""
    answer = chat(space.client(), QUESTIONS[0], 64).result()  # the app's first request (tests run in file order)
    first = space.api.wait_for("/schedule", STARTUP_TASKS + 1)[STARTUP_TASKS]
    assert int(first.params["durationSeconds"]) == gpu_budget.GpuBudget().seconds_for(64)  # nothing measured yet
    assert "not measured yet" in space.asks()[0].group(3)
    shown = stats_of(answer)
    for tokens in (1024, 8):
        chat(space.client(), QUESTIONS[1], tokens).result()
    schedules = space.api.wait_for("/schedule", STARTUP_TASKS + 3)[STARTUP_TASKS + 1 : STARTUP_TASKS + 3]
    asks = space.asks()[1:3]
    assert [int(a.group(1)) for a in asks] == [int(s.params["durationSeconds"]) for s in schedules]
    measured = figures_of(asks[0])
    print(*(ask.group(0) for ask in space.asks()), shown, sep="\n")  # the figures, for the record (pytest -s)
    assert measured.answers == 1  # the first answer's figures, as its stats line shows them
    assert math.isclose(1 / measured.seconds_per_token, shown["server_tok_s"], abs_tol=0.051)
    assert math.isclose(measured.first_token_s, shown["server_ttft_s"], abs_tol=0.0051)
    assert 0 < measured.startup_s < 60  # the worker's fork to its first generation
    # The request's worker decodes through the step compiled at startup, and never fell back to eager.
    log = space.log.read_text()
    assert "ZeroGPU worker: ready in" in log and "decoding with the static step (compiled ahead of time" in log
    assert "back to eager" not in log
    for ask, tokens in zip(asks, (1024, 8), strict=True):
        assert abs(int(ask.group(1)) - figures_of(ask).seconds_for(tokens)) <= 1  # the log rounds the figures
    asked_1024, asked_8 = (int(a.group(1)) for a in asks)
    assert asked_8 <= asked_1024, [a.group(0) for a in asks]


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
    assert space.api.worker_pid() != space.process.pid  # the answer came from a forked worker


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


def test_a_quota_refusal_shows_spaces_message_readably_and_the_next_request_is_served(space: Space) -> None:
    """spaces refuses in the main process, before any worker: its message reaches /ask and /chat as text."""
    client = space.client(**{"X-IP-Token": ip_token()})  # a visitor: spaces says what is left and how long to wait
    before = grants(space.api)
    space.api.refusals += ["quota", "quota"]
    errors = [
        refused(lambda: client.predict(QUESTIONS[1], 512, *GREEDY, False, api_name="/ask")),
        refused(lambda: chat(client, QUESTIONS[1], 512).result()),
    ]
    schedules = space.api.wait_for("/schedule", before + 2)[before:]
    for error, schedule in zip(errors, schedules, strict=True):
        asked = schedule.params["durationSeconds"]
        assert error.message.startswith(
            f"You have exceeded your ZeroGPU quota ({asked}s requested vs. {space.api.QUOTA_LEFT_S}s left). "
            "Try again in 4 min 31 s. "
        ), error.message
        assert "https://huggingface.co/settings/tokens" in error.message  # spaces' advice to API clients, kept
        assert error.title == "ZeroGPU quota exceeded"
        assert_readable(error)
        assert "granted" not in schedule.params  # refused: no GPU, no worker
    assert answer_of(chat(client, QUESTIONS[1]).result()) == ADAPTER_ANSWER


def test_no_gpu_and_a_queue_timeout_read_as_plain_text_in_the_api_and_mcp(space: Space) -> None:
    client = space.client(**{"X-IP-Token": ip_token()})
    space.api.refusals += ["no-gpu", "queue-timeout"]
    no_gpu = refused(lambda: client.predict(QUESTIONS[1], 64, *GREEDY, False, api_name="/ask"))
    assert no_gpu.message == "No GPU was available"
    timeout = refused(lambda: client.predict(QUESTIONS[1], 64, *GREEDY, False, api_name="/ask"))
    assert timeout.message == (  # spaces words it in HTML, a link in an <a> tag
        "No GPU was available after 60s. Create a free account (https://huggingface.co/join) to get a higher "
        "priority in ZeroGPU queues."
    )
    for error in (no_gpu, timeout):
        assert_readable(error)
    # MCP (no visitor token here: spaces' message for a Space out of quota)
    space.api.refusals.append("quota")
    text = asyncio.run(asyncio.wait_for(mcp_ask(space.url, QUESTIONS[1]), timeout=60))
    assert text == (
        "Space app has reached its GPU limit. Try re-running outside of examples if it happened after clicking one"
    )
    assert answer_of(chat(space.client(), QUESTIONS[1]).result()) == ADAPTER_ANSWER


async def mcp_ask(url: str, question: str) -> str:
    """The MCP tool `ask` called as an MCP client calls it; its text (an error's too)."""
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async with (
        streamable_http_client(f"{url.rstrip('/')}/gradio_api/mcp/") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        ask = next(tool.name for tool in tools.tools if tool.name.endswith("ask"))
        result = await session.call_tool(ask, {"question": question, "temperature": 0})
        return "".join(part.text for part in result.content if hasattr(part, "text"))


class Throttle:
    """A process run 10 ms in every 100 (SIGSTOP / SIGCONT), as a GPU far slower than measured would run it; after
    freeze() it stays stopped (a stalled GPU) until it is killed."""

    def __init__(self, pid: int) -> None:
        self.pid, self.done, self.frozen = pid, threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            while not self.done.is_set():
                os.kill(self.pid, signal.SIGSTOP)
                time.sleep(0.09)
                if self.frozen.is_set():
                    return
                os.kill(self.pid, signal.SIGCONT)
                time.sleep(0.01)

    def freeze(self) -> None:
        self.frozen.set()
        self.thread.join(5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGSTOP)

    def __enter__(self) -> Throttle:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join(5)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGCONT)


CUT_TOKENS = 1024


def test_an_answer_past_its_asked_duration_is_cut_readably_and_the_next_ask_is_longer(space: Space) -> None:
    before = grants(space.api)
    space.api.cut_overruns = True
    try:
        # The base answer's 1024 tokens: the compiled step writes 128 of the tiny model's in under the second below.
        adapter_job, base_job = compare_jobs(space.client(), QUESTIONS[2], CUT_TOKENS)
        schedule = space.api.wait_for("/schedule", before + 2)[before + 1]  # the base answer's
        with Throttle(space.api.worker_pid()) as throttle:  # the worker spaces reuses after the adapter's answer
            time.sleep(1.0)  # it has started the answer (at a tenth of its speed: its tokens take longer)
            throttle.freeze()  # and stalls: ZeroGPU kills it once its asked duration is over
            base = base_job.result(timeout=180)
    finally:
        space.api.cut_overruns = False
    assert answer_of(adapter_job.result()) == ADAPTER_ANSWER
    asked = int(schedule.params["durationSeconds"])
    shown = text_of(base[-1]["content"])
    assert shown == f"⚠️ {gpu_refusals.CUT_OFF.format(asked=asked)}", base
    release = space.api.release_of(schedule)
    assert release.params["fail"] == "true" and release.at - schedule.at >= asked
    # The app serves the next request (on a new worker), and asks more for the same tokens.
    after = grants(space.api)
    assert answer_of(chat(space.client(), QUESTIONS[1], CUT_TOKENS).result()) == ADAPTER_ANSWER
    assert int(space.api.wait_for("/schedule", after + 1)[after].params["durationSeconds"]) > asked


@pytest.mark.browser
def test_the_page_shows_a_quota_refusal_readably_and_asks_again(space: Space, chromium: Any) -> None:
    from playwright.sync_api import expect

    from tests.helpers.browser import open_page, screenshot_path

    with open_page(chromium, space.url, timeout_ms=60_000) as page:
        page.context.set_extra_http_headers({"X-IP-Token": ip_token()})  # as the Hub's proxy adds it
        space.api.refusals.append("quota")
        box = page.locator("#question textarea")
        box.fill(QUESTIONS[1])
        box.press("Enter")
        toast = page.get_by_text(re.compile(r"You have exceeded your ZeroGPU quota \(\d+s requested vs\. 20s left\)"))
        expect(toast).to_be_visible()
        expect(page.get_by_text(re.compile("Try again in 4 min 31 s"))).to_be_visible()
        expect(page.get_by_text(re.compile("Authenticate|settings/tokens"))).to_have_count(0)  # API clients' advice
        expect(box).to_have_value(QUESTIONS[1])  # back in the box, to send again
        page.screenshot(path=screenshot_path("zerogpu-quota-refusal"), animations="disabled")
        box.press("Enter")
        answered = page.locator("#chat").get_by_text(re.compile(r"⏱ .*tok/s"))  # the stats line under the answer
        expect(answered).to_be_visible(timeout=300_000)  # 512 tokens at the card's sampling, on a busy machine
