"""The benchmark of issue 5, in one command: raw model vs the running app, the CPU modes, cold start and memory.

    python -m medcot.bench [--model DIR|embedded] [--out docs/bench/bench.json] [--chart docs/bench/bench.png]
                           [--rounds 5] [--new-tokens 64] [--cold-starts 2] [--quick]

Everything runs on this machine, one thing at a time: the CPU modes side by side (medcot.bench_cpu, quality check
included), then fresh `python app.py` processes timed from process start to their first served token, then raw
`model.generate` in this process against the same model served by a running app over `gradio_client`, in
interleaved rounds (raw, app, raw, app, ...). It prints a table with each target, writes the figures as JSON and
draws them as a PNG chart. See docs/benchmark.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import TextStreamer

from medcot.bench_cpu import TokenClock, run_modes
from medcot.config import GenerationParams, Settings
from medcot.generation import sampling_kwargs, stop_token_ids
from medcot.model.cpu_speed import CPU_MODES
from medcot.model.embedded import EMBEDDED_ID
from medcot.model.loading import LoadedModel, load_model
from medcot.prompt import encode_prompt

# The "done when" figures.
TARGET_RATIO = 0.95  # app/raw decode tokens/s
TARGET_TTFT_MS = 100.0  # app time to first token minus raw
TARGET_TOK_S = 30.0  # decode tokens/s of the served CPU mode on 2 cores, quality check passed
TARGET_COLD_START_S = 15.0  # process start to first served token, cached model
TARGET_RSS_MIB = 1536.0  # 1.5 GiB peak resident set of the app process

APP_FILE = Path(__file__).resolve().parent.parent / "app.py"
# The stats line under an answer (medcot.ui.STATS_PREFIX and format_stats; ui imports gradio, so not imported).
STATS_PREFIX = "<sub>⏱"
_STATS_TOKENS = re.compile(r"(\d+) tokens \(")
_STATS_TTFT = re.compile(r"first token ([\d.]+) s")
_STATS_RATE = re.compile(r"([\d.]+) tok/s")
_START_TIMEOUT_S = 300.0  # a first start may convert the embedded GGUF (~1 min on 2 cores)
_RETRY_S = 0.1  # while the model loads, a request is refused at once; ask again this often
# The app coalesces streamed updates to one per 100 ms (medcot.ui.UPDATE_INTERVAL_S): a decode rate taken over a
# shorter span than a few of those says more about the coalescing than about the model.
_MIN_APP_SPAN_S = 0.25
# Served greedily by the embedded base (f16-int8head), this question gets 71 tokens before the base starts a new
# "### Question:" turn (where the app stops): 64 new tokens are produced in full on both sides.
APP_QUESTION = "Explain step by step how to assess a patient with acute shortness of breath."


# -- machine -----------------------------------------------------------------------------------------------------
def _version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    """What the figures depend on; the load average says how busy the machine was (it is read again at the end)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_available": cores,
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "gradio": _version("gradio"),
        "gradio_client": _version("gradio_client"),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }


def process_memory(pid: int) -> dict[str, float | None]:
    """Peak (VmHWM) and current resident set of a process, with its anonymous and file-backed parts, in MiB."""
    fields = {"VmHWM": "peak_rss_mib", "VmRSS": "rss_mib", "RssAnon": "rss_anon_mib", "RssFile": "rss_file_mib"}
    found: dict[str, float | None] = dict.fromkeys(fields.values())
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in fields:
                found[fields[key]] = round(int(value.split()[0]) / 1024, 1)  # kB
    return found


# -- the app in its own process ----------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_env(model: str, cpu_mode: str, cache_dir: Path | None = None) -> dict[str, str]:
    """The MEDCOT_* settings both sides use: `model` is a folder of full weights, or `embedded`."""
    env = {
        "MEDCOT_BASE_MODEL": EMBEDDED_ID if model == "embedded" else str(Path(model).resolve()),
        "MEDCOT_ADAPTER": "",  # the folder (or the embedded base) is served alone
        "MEDCOT_CPU_MODE": cpu_mode,
        "MEDCOT_DEVICE": "cpu",
        "MEDCOT_DTYPE": "auto",  # on CPU: the CPU mode decides
        "HF_HUB_OFFLINE": "1",
    }
    if cache_dir is not None:
        env["MEDCOT_CACHE_DIR"] = str(cache_dir)
    return env


@dataclass
class AppProcess:
    """`python app.py` started with `env`; `started` is the perf_counter reading just before the process began."""

    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    started: float = 0.0
    process: subprocess.Popen | None = None
    log: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> AppProcess:
        environ = {
            **os.environ,
            **self.env,
            "GRADIO_SERVER_NAME": "127.0.0.1",
            "GRADIO_SERVER_PORT": str(self.port),
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
        }
        self.log = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, str(APP_FILE)], cwd=APP_FILE.parent, env=environ, stdout=self.log, stderr=self.log
        )
        return self

    def output_tail(self, chars: int = 3000) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-chars:]

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"app.py exited with code {self.process.returncode}:\n{self.output_tail()}")

    def wait_until_listening(self, timeout: float = _START_TIMEOUT_S) -> float:
        """Seconds from process start until the server answers HTTP."""
        deadline = time.monotonic() + timeout
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with direct.open(self.url + "config", timeout=2):
                    pass
            except urllib.error.HTTPError:
                pass  # an HTTP answer of any kind: the server is up
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.02)
                continue
            return time.perf_counter() - self.started
        raise TimeoutError(f"app.py did not listen within {timeout:.0f} s:\n{self.output_tail()}")

    def memory(self) -> dict[str, float | None]:
        return process_memory(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        if self.log is not None:
            self.log.close()


# -- one request through gradio_client ---------------------------------------------------------------------------
class _StampedOutputs(list):
    """gradio_client's list of a job's streamed outputs, noting when each was handed over to the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(time.perf_counter())
        super().append(item)


class _ArrivalQueue(collections.deque):
    """gradio_client's queue of one event's server messages, noting when each streamed output reached this process.

    gradio_client's reader thread puts messages here as it reads them off the event stream; the thread that turns
    them into outputs looks for new ones only every 50 ms, which a browser does not do.
    """

    def __init__(self, *items: Any) -> None:
        super().__init__(*items)
        self.arrivals: list[float] = []

    def append(self, message: Any) -> None:
        if isinstance(message, dict) and message.get("msg") == "process_generating":
            self.arrivals.append(time.perf_counter())
        super().append(message)


class _ArrivalQueues(dict):
    """gradio_client's event id -> message queue, whose queues are _ArrivalQueue (kept after the event ends)."""

    def __init__(self) -> None:
        super().__init__()
        self.finished: dict[str, _ArrivalQueue] = {}

    def __setitem__(self, event_id: str, queue: Any) -> None:
        queue = queue if isinstance(queue, _ArrivalQueue) else _ArrivalQueue(queue)
        self.finished[event_id] = queue
        super().__setitem__(event_id, queue)

    def setdefault(self, event_id: str, default: Any = None) -> Any:
        if event_id not in self:
            self[event_id] = collections.deque() if default is None else default
        return self[event_id]


def timed_client(url: str) -> Any:
    """A gradio_client Client whose jobs note when every streamed update arrived, and when it was handed over.

    Iterating a Job instead would poll every millisecond, on the same cores as the app it measures.
    """
    from gradio_client import Client

    # The app is on loopback over plain HTTP, so there is no TLS to verify; verifying would have gradio_client load
    # the CA certificates into a new SSL context for each of its httpx clients, several per request (~40 ms of CPU
    # per request, on the cores the app decodes on).
    client = Client(url, verbose=False, ssl_verify=False)
    client.pending_messages_per_event = _ArrivalQueues()
    new_helper = client.new_helper

    def stamped_helper(fn_index: int, headers: dict[str, str] | None = None) -> Any:
        helper = new_helper(fn_index, headers=headers)
        helper.job.outputs = _StampedOutputs()
        return helper

    client.new_helper = stamped_helper
    return client


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else ""


def visible_text(messages: Any) -> str:
    """Reasoning and answer shown in a /chat update (the stats line left out)."""
    texts = [_message_text(m) for m in messages or [] if isinstance(m, dict)]
    return "".join(text for text in texts if not text.startswith(STATS_PREFIX))


def stats_line(messages: Any) -> str | None:
    return next((t for m in messages or [] if (t := _message_text(m)).startswith(STATS_PREFIX)), None)


def parse_stats(line: str | None) -> dict[str, float | int | None]:
    """The app's own figures from its stats line: tokens generated, its time to first text, its tokens/s."""

    def number(pattern: re.Pattern[str], kind: type) -> Any:
        found = pattern.search(line or "")
        return kind(found.group(1)) if found else None

    return {
        "tokens": number(_STATS_TOKENS, int),
        "server_ttft_s": number(_STATS_TTFT, float),
        "server_tok_s": number(_STATS_RATE, float),
    }


def serve_once(client: Any, question: str, new_tokens: int, timeout: float = 600.0) -> dict[str, Any]:
    """One greedy /chat request: when it was sent, when each update arrived, the final text and the app's stats.

    Raises gradio_client's AppError when the app refuses it (for instance while the model is still loading).
    """
    client.reset_session()  # /chat keeps the conversation per session: every request starts a fresh one
    sent = time.perf_counter()
    job = client.submit(question, new_tokens, 0.0, 0.95, 64, 1.0, api_name="/chat")
    final = job.result(timeout=timeout)
    outputs: _StampedOutputs = job.communicator.job.outputs
    queues = client.pending_messages_per_event
    arrivals = queues.finished.pop(job.communicator.event_id).arrivals if isinstance(queues, _ArrivalQueues) else []
    if len(arrivals) != len(outputs):  # one output per streamed message; if not, the handover times stand in
        arrivals = outputs.times
    updates = list(zip(arrivals, outputs.times, outputs, strict=True))
    first = next((u for u in updates if visible_text(u[2]).strip()), None)
    last = next((u for u in reversed(updates) if stats_line(u[2])), None) or (updates[-1] if updates else None)
    return {
        "sent": sent,
        "first_update_at": updates[0][0] if updates else None,  # the empty reply, before generation
        "first_text_at": first[0] if first else None,
        "first_text_handed_at": first[1] if first else None,
        "first_text": visible_text(first[2]) if first else "",
        "finished_at": last[0] if last else time.perf_counter(),
        "updates": len(updates),
        "text": visible_text(final),
        **parse_stats(stats_line(final)),
    }


def is_loading_refusal(exc: BaseException) -> bool:
    return "still loading" in str(exc)


def serve_when_ready(client: Any, question: str, new_tokens: int, app: AppProcess) -> dict[str, Any]:
    """Ask until the app stops refusing because its model is still loading; the first served answer."""
    from gradio_client.exceptions import AppError

    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        app.check_alive()
        try:
            return serve_once(client, question, new_tokens)
        except AppError as exc:
            if not is_loading_refusal(exc) or time.monotonic() > deadline:
                raise
        time.sleep(_RETRY_S)


# -- the same generation, raw ------------------------------------------------------------------------------------
def measure_raw(loaded: LoadedModel, prompt: Sequence[int], new_tokens: int) -> dict[str, Any]:
    """Greedy model.generate with the app's generation arguments: per-token times and the tokens."""
    model, tokenizer = loaded.model, loaded.tokenizer
    ids = torch.tensor([list(prompt)], dtype=torch.long)
    clock = TokenClock()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    arguments = sampling_kwargs(GenerationParams(max_new_tokens=new_tokens, temperature=0.0))
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            streamer=clock,
            eos_token_id=stop_token_ids(tokenizer, model),
            pad_token_id=pad,
            **arguments,
        )
    times = clock.times[1:]  # the first call to the streamer carries the prompt
    return {"start": start, "token_times": times, "tokens": out[0, len(prompt) :].tolist()}


class _TextMarks(TextStreamer):
    """Replays generated tokens through transformers' streamer: (tokens so far, text shown so far) per chunk."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
        self.count = 0
        self.text = ""
        self.marks: list[tuple[int, str]] = []

    def put(self, value: torch.Tensor) -> None:
        self.count += int(value.numel())
        super().put(value)

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        self.text += text
        if text:
            self.marks.append((self.count, self.text))


def _letters(text: str) -> int:
    return len("".join(text.split()))


def tokens_behind_text(tokenizer: Any, tokens: Sequence[int], shown: str) -> int:
    """How many generated tokens the app had made when it showed `shown` (its first text), from the same tokens.

    The app's streamer shows text in chunks (and holds back what may start a tag or a stop marker); the first
    chunk that holds at least as much text as `shown` marks the token count. Whitespace is not compared: the
    app strips it at the edges.
    """
    marks = _TextMarks(tokenizer)
    for token in tokens:
        marks.put(torch.tensor([token]))
    marks.end()
    wanted = _letters(shown)
    return next((count for count, text in marks.marks if _letters(text) >= wanted), len(tokens))


def _rate(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if tokens > 0 and seconds > 0 else None


def compare_round(loaded: LoadedModel, raw: dict[str, Any], app: dict[str, Any]) -> dict[str, Any]:
    """The figures of one raw run and the app run that followed it."""
    times, tokens = raw["token_times"], raw["tokens"]
    raw_ttft = times[0] - raw["start"]
    raw_rate = _rate(len(times) - 1, times[-1] - times[0])
    app_tokens = app["tokens"] if app["tokens"] is not None else len(tokens)
    shown_at = tokens_behind_text(loaded.tokenizer, tokens, app["first_text"]) if app["first_text_at"] else None
    app_ttft = app["first_text_at"] - app["sent"] if app["first_text_at"] else None
    app_rate = None
    if shown_at is not None and app["finished_at"] - app["first_text_at"] >= _MIN_APP_SPAN_S:
        app_rate = _rate(app_tokens - shown_at, app["finished_at"] - app["first_text_at"])
    raw_text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
    return {
        "raw_ttft_s": raw_ttft,
        "raw_tok_s": raw_rate,
        "raw_tokens": len(tokens),
        # When the raw run had made as many tokens as the app's first update shows: the streamer's share of TTFT.
        "raw_first_text_s": times[min(shown_at, len(times)) - 1] - raw["start"] if shown_at else None,
        "app_ttft_s": app_ttft,
        # The same as gradio_client hands it to the caller, after up to 50 ms in its message queue.
        "app_ttft_handed_s": app["first_text_handed_at"] - app["sent"] if app["first_text_handed_at"] else None,
        # The reply's first (empty) update: the request's way through HTTP and Gradio's queue and back.
        "app_first_update_s": app["first_update_at"] - app["sent"] if app["first_update_at"] else None,
        "app_tok_s": app_rate,
        "app_tokens": app_tokens,
        "app_tokens_at_first_update": shown_at,
        "app_updates": app["updates"],
        "app_server_ttft_s": app["server_ttft_s"],
        "app_server_tok_s": app["server_tok_s"],
        "app_total_s": app["finished_at"] - app["sent"],
        "raw_total_s": times[-1] - raw["start"],
        "same_tokens": app_tokens == len(tokens),
        # The app may end earlier (stop texts) but never shows other text than the model made.
        "same_text": " ".join(raw_text.split()).startswith(" ".join(app["text"].split())),
    }


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def app_vs_raw(
    loaded: LoadedModel,
    url: str,
    question: str,
    new_tokens: int,
    rounds: int,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Interleaved rounds (raw, then the app; never both at once) after one warm-up of each; medians."""
    client = timed_client(url)
    prompt = encode_prompt(loaded.tokenizer, question).input_ids
    measure_raw(loaded, prompt, new_tokens)  # warm-up: first-call allocations on both sides
    serve_once(client, question, new_tokens)
    samples = []
    for index in range(rounds):
        raw = measure_raw(loaded, prompt, new_tokens)
        app = serve_once(client, question, new_tokens)
        sample = compare_round(loaded, raw, app)
        samples.append(sample)
        report(
            f"round {index + 1}/{rounds}: raw {sample['raw_tok_s'] or 0:.1f} tok/s,"
            f" TTFT {sample['raw_ttft_s'] * 1e3:.0f} ms | app {sample['app_tok_s'] or 0:.1f} tok/s,"
            f" TTFT {(sample['app_ttft_s'] or 0) * 1e3:.0f} ms"
            f" ({sample['app_tokens']} tokens, {sample['app_updates']} updates)"
        )
    ratios = [s["app_tok_s"] / s["raw_tok_s"] for s in samples if s["app_tok_s"] and s["raw_tok_s"]]
    ttft_diffs = [s["app_ttft_s"] - s["raw_ttft_s"] for s in samples if s["app_ttft_s"] is not None]
    summary = {
        "raw_tok_s": _round(_median([s["raw_tok_s"] for s in samples]), 1),
        "app_tok_s": _round(_median([s["app_tok_s"] for s in samples]), 1),
        "tok_s_ratio": _round(_median(ratios), 3),
        "raw_ttft_ms": _round(_median([s["raw_ttft_s"] * 1e3 for s in samples]), 1),
        "app_ttft_ms": _round(_median([s["app_ttft_s"] and s["app_ttft_s"] * 1e3 for s in samples]), 1),
        "ttft_diff_ms": _round(_median([d * 1e3 for d in ttft_diffs]), 1),
        "app_ttft_handed_ms": _round(
            _median([s["app_ttft_handed_s"] and s["app_ttft_handed_s"] * 1e3 for s in samples]), 1
        ),
        "raw_first_text_ms": _round(
            _median([s["raw_first_text_s"] and s["raw_first_text_s"] * 1e3 for s in samples]), 1
        ),
        "app_server_ttft_ms": _round(
            _median([s["app_server_ttft_s"] and s["app_server_ttft_s"] * 1e3 for s in samples]), 1
        ),
        "app_server_tok_s": _round(_median([s["app_server_tok_s"] for s in samples]), 1),
        "app_first_update_ms": _round(
            _median([s["app_first_update_s"] and s["app_first_update_s"] * 1e3 for s in samples]), 1
        ),
        "tokens": samples[-1]["app_tokens"] if samples else None,
        "same_tokens": all(s["same_tokens"] for s in samples),
        "same_text": all(s["same_text"] for s in samples),
    }
    rounded = [{k: round(v, 4) if isinstance(v, float) else v for k, v in s.items()} for s in samples]
    return {
        "question": question,
        "prompt_tokens": len(prompt),
        "new_tokens": new_tokens,
        "rounds": rounds,
        **summary,
        "samples": rounded,
    }


# -- cold start --------------------------------------------------------------------------------------------------
def measure_start(app: AppProcess, question: str, new_tokens: int) -> dict[str, Any]:
    """Seconds from the start of a just started app process to listening, to its model taking requests and to its
    first served token; its memory once that first answer is complete."""
    listening = app.wait_until_listening()
    client = timed_client(app.url)
    served = serve_when_ready(client, question, new_tokens, app)
    return {
        "listening_s": round(listening, 2),
        "model_ready_s": round(served["sent"] - app.started, 2),  # the request that was not refused was sent here
        "first_token_s": round(served["first_text_at"] - app.started, 2) if served["first_text_at"] else None,
        "answered_s": round(served["finished_at"] - app.started, 2),
        **app.memory(),
    }


# -- targets, table, chart ---------------------------------------------------------------------------------------
def _target(value: Any, target: float, unit: str, higher_is_better: bool, what: str) -> dict[str, Any]:
    passed = value is not None and (value >= target if higher_is_better else value <= target)
    sign = ">=" if higher_is_better else "<="
    return {"what": what, "value": value, "target": f"{sign} {target:g}", "unit": unit, "passed": bool(passed)}


def _mode_speed(mode: Mapping[str, Any]) -> float | None:
    """Median decode tok/s of a mode in medcot.bench_cpu's results (at the default thread count)."""
    return next((v["decode_tok_s_median"] for k, v in mode.items() if k.startswith("threads_")), None)


def evaluate_targets(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Each figure of the issue's "done when" list with its value and whether it passed."""
    served = result["settings"]["applied_mode"]
    compared = result.get("app_vs_raw") or {}
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    mode = modes.get(served, {})
    speed = _mode_speed(mode)
    if speed is None:
        speed = compared.get("raw_tok_s")
    quality = (mode.get("quality") or {}).get("passed")
    starts = result.get("cold_start") or {}
    return {
        "app_raw_tok_s_ratio": _target(compared.get("tok_s_ratio"), TARGET_RATIO, "", True, "app/raw decode tok/s"),
        "ttft_app_minus_raw_ms": _target(
            compared.get("ttft_diff_ms"), TARGET_TTFT_MS, "ms", False, "app TTFT minus raw TTFT"
        ),
        "decode_tok_s": _target(speed, TARGET_TOK_S, "tok/s", True, f"decode speed, served mode {served}"),
        "quality_check": {
            "what": f"greedy tokens of {served} equal f32's",
            "value": quality,
            "target": "passed",
            "unit": "",
            "passed": quality is True,
        },
        "cold_start_s": _target(
            starts.get("first_token_s"), TARGET_COLD_START_S, "s", False, "cold start to 1st token"
        ),
        "peak_rss_mib": _target(starts.get("peak_rss_mib"), TARGET_RSS_MIB, "MiB", False, "app peak RSS (VmHWM)"),
    }


def _table_rows(result: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for target in result["targets"].values():
        value = target["value"]
        shown = "n/a" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
        passed = "PASS" if target["passed"] else "FAIL"
        rows.append((target["what"], f"{shown} {target['unit']}".strip(), target["target"], passed))
    compared = result.get("app_vs_raw") or {}
    if compared:
        rows.append(("raw / app decode tok/s", f"{compared['raw_tok_s']} / {compared['app_tok_s']}", "", ""))
        rows.append(
            ("raw / app time to first token", f"{compared['raw_ttft_ms']} / {compared['app_ttft_ms']} ms", "", "")
        )
    return rows


def format_table(result: Mapping[str, Any]) -> str:
    """The figures against their targets, as aligned text for the terminal."""
    rows = [("figure", "value", "target", ""), *_table_rows(result)]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def format_markdown(result: Mapping[str, Any]) -> str:
    """The same table in Markdown, under a line naming the machine and the date (for docs/benchmark.md)."""
    machine = result["machine"]
    end = (machine.get("load_average_end") or ["?"])[0]
    lines = [
        f"Measured {machine['date'][:10]} on {machine['cpu']}, {machine['cores_available']} cores "
        f"({machine['torch_threads']} torch threads), torch {machine['torch']}, "
        f"transformers {machine['transformers']}, gradio {machine['gradio']}; load average (1 min) "
        f"{machine['load_average_start'][0]} at the start, {end} at the end.",
        "",
        "| figure | value | target | |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {' | '.join(row)} |" for row in _table_rows(result)]
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    if modes:
        lines += ["", "| CPU mode | decode tok/s (median) | time to first token | greedy tokens equal f32's |"]
        lines += ["| --- | --- | --- | --- |"]
        for name, mode in modes.items():
            timing = next((v for k, v in mode.items() if k.startswith("threads_")), {})
            served = " (served)" if name == result["settings"]["applied_mode"] else ""
            quality = (mode.get("quality") or {}).get("passed")
            ttft = timing.get("ttft_s_median")
            lines.append(
                f"| {name}{served} | {timing.get('decode_tok_s_median')} | "
                f"{'n/a' if ttft is None else f'{ttft * 1e3:.0f} ms'} | {quality} |"
            )
    return "\n".join(lines)


def draw_chart(result: Mapping[str, Any], path: Path) -> None:
    """Six panels: tok/s per CPU mode, raw vs app tok/s and TTFT, cold start, memory, and the targets.

    A bar measured against a target is green when it meets it and red when it does not.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    machine, settings, targets = result["machine"], result["settings"], result["targets"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    fig.suptitle(
        f"MedCoT benchmark: {settings['model_name']} served as {settings['applied_mode']}, on {machine['cpu']} "
        f"({machine['cores_available']} cores, {machine['torch_threads']} torch threads), {machine['date'][:10]}",
        fontsize=12,
    )
    green, red, grey = "#2e7d32", "#c62828", "#90a4ae"

    def status(name: str) -> str:
        return green if targets[name]["passed"] else red

    def bars(ax: Any, labels: list[str], values: list[float | None], colors: list[str], fmt: str) -> None:
        drawn = ax.bar(labels, [v or 0 for v in values], color=colors)
        for bar, value in zip(drawn, values, strict=True):
            text = "n/a" if value is None else fmt.format(value)
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
        ax.margins(y=0.15)

    def target_line(ax: Any, value: float, label: str) -> None:
        ax.axhline(value, color="black", linestyle="--", linewidth=1, label=label)
        ax.legend(loc="best", fontsize=8)

    ax = axes[0][0]
    modes = (result.get("cpu_modes") or {}).get("modes", {})
    if modes:
        names = list(modes)
        speeds = [_mode_speed(modes[name]) for name in names]
        colors = [
            red
            if (modes[n].get("quality") or {}).get("passed") is False
            else green
            if (s or 0) >= TARGET_TOK_S
            else grey
            for n, s in zip(names, speeds, strict=True)
        ]
        bars(ax, [n + (" *" if n == settings["applied_mode"] else "") for n in names], speeds, colors, "{:.1f}")
        target_line(ax, TARGET_TOK_S, f"target {TARGET_TOK_S:g}")
        ax.tick_params(axis="x", labelsize=8)
    else:
        ax.text(0.5, 0.5, "not measured (--modes '')", ha="center", transform=ax.transAxes)
    ax.set_title("Raw decode tok/s per CPU mode (* served, red: quality failed)", fontsize=10)
    ax.set_ylabel("tokens/s")

    compared = result.get("app_vs_raw") or {}
    labels = ["raw generate", "app (gradio_client)"]
    ax = axes[0][1]
    speeds = [compared.get("raw_tok_s"), compared.get("app_tok_s")]
    bars(ax, labels, speeds, [grey, status("app_raw_tok_s_ratio")], "{:.1f}")
    ax.set_title(f"Decode tok/s, app/raw = {compared.get('tok_s_ratio')} (target >= {TARGET_RATIO})", fontsize=10)
    ax.set_ylabel("tokens/s")

    ax = axes[0][2]
    raw_ttft = compared.get("raw_ttft_ms")
    bars(ax, labels, [raw_ttft, compared.get("app_ttft_ms")], [grey, status("ttft_app_minus_raw_ms")], "{:.0f}")
    if raw_ttft is not None:
        target_line(ax, raw_ttft + TARGET_TTFT_MS, f"raw + {TARGET_TTFT_MS:g} ms")
    ax.set_title(f"Time to first token: app - raw = {compared.get('ttft_diff_ms')} ms", fontsize=10)
    ax.set_ylabel("ms")

    starts = result.get("cold_start") or {}
    ax = axes[1][0]
    steps = [starts.get(k) for k in ("listening_s", "model_ready_s", "first_token_s")]
    bars(ax, ["server listening", "model ready", "first token"], steps, [grey, grey, status("cold_start_s")], "{:.1f}")
    target_line(ax, TARGET_COLD_START_S, f"target {TARGET_COLD_START_S:g} s")
    ax.set_title("Cold start of python app.py, s from process start (median)", fontsize=10)
    ax.set_ylabel("seconds")

    ax = axes[1][1]
    memory = [starts.get(k) for k in ("peak_rss_mib", "rss_mib", "rss_anon_mib", "rss_file_mib")]
    bars(
        ax,
        ["peak", "steady", "anonymous", "file-backed"],
        memory,
        [status("peak_rss_mib"), grey, grey, grey],
        "{:.0f}",
    )
    target_line(ax, TARGET_RSS_MIB, f"target {TARGET_RSS_MIB:g} MiB")
    ax.set_title("App memory (RSS) after its first answer, MiB", fontsize=10)
    ax.set_ylabel("MiB")

    ax = axes[1][2]
    ax.axis("off")
    for index, target in enumerate(targets.values()):
        value = "n/a" if target["value"] is None else f"{target['value']} {target['unit']}".strip()
        line = f"{'PASS' if target['passed'] else 'FAIL'}  {target['what']}: {value} ({target['target']})"
        color = green if target["passed"] else red
        ax.text(0, 0.95 - index * 0.12, line, color=color, fontsize=9, family="monospace", transform=ax.transAxes)
    loads = f"load average at start / end: {machine['load_average_start']} / {machine.get('load_average_end')}"
    ax.text(0, 0.95 - len(targets) * 0.12, loads, fontsize=8, transform=ax.transAxes)
    ax.set_title("Targets (issue 5)", fontsize=10)

    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the whole run -----------------------------------------------------------------------------------------------
@dataclass
class Options:
    model: str = "embedded"  # a folder of full weights and tokenizer, or "embedded"
    cache_dir: Path | None = None
    cpu_mode: str = "auto"
    modes: Sequence[str] = tuple(m for m in CPU_MODES if m != "auto")
    rounds: int = 5
    mode_rounds: int = 5
    new_tokens: int = 64
    cold_starts: int = 2
    question: str = APP_QUESTION
    quality: bool = True


def model_folder(options: Options) -> Path:
    if options.model != "embedded":
        return Path(options.model)
    from medcot.model.embedded import embedded_model_dir

    return embedded_model_dir(options.cache_dir, lambda message, fraction: print(message, flush=True))


def run_benchmark(options: Options, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Every figure of the issue, one phase at a time, as one JSON-ready dict (targets included)."""
    folder = model_folder(options)
    env = app_env(options.model, options.cpu_mode, options.cache_dir)
    result: dict[str, Any] = {"benchmark": "medcot.bench", "machine": machine_info()}

    report("Loading the model as the app does")
    loaded = load_model(Settings.from_env(env))
    applied = loaded.dtype  # the CPU mode "auto" resolved to here; the app is started with it pinned
    result["settings"] = {
        "model": str(folder),
        "model_name": EMBEDDED_ID if options.model == "embedded" else folder.name,
        "requested_mode": options.cpu_mode,
        "applied_mode": applied,
        "new_tokens": options.new_tokens,
        "rounds": options.rounds,
        "cold_starts": options.cold_starts,
        "question": options.question,
    }

    modes = list(dict.fromkeys([*options.modes, applied])) if options.modes else []
    if modes:
        report(f"CPU modes side by side: {', '.join(modes)}")
        result["cpu_modes"] = run_modes(
            folder, modes, options.mode_rounds, options.new_tokens, quality=options.quality, report=report
        )
        gc.collect()

    starts: list[dict[str, Any]] = []
    app: AppProcess | None = None
    try:
        for index in range(options.cold_starts):  # one app process at a time, each started afresh
            if app is not None:
                app.stop()
            app = AppProcess(env).start()
            starts.append(measure_start(app, options.question, options.new_tokens))
            report(f"cold start {index + 1}/{options.cold_starts}: {starts[-1]}")
        if app is None or options.cpu_mode != applied:
            # "auto" is pinned to what it resolved to in this process, so both sides surely run the same mode.
            if app is not None:
                app.stop()
            app = AppProcess({**env, "MEDCOT_CPU_MODE": applied}).start()
            app.wait_until_listening()
            serve_when_ready(timed_client(app.url), options.question, options.new_tokens, app)
        report(f"App vs raw ({applied}), {options.rounds} interleaved rounds of {options.new_tokens} new tokens")
        compared = app_vs_raw(loaded, app.url, options.question, options.new_tokens, options.rounds, report)
        result["app_vs_raw"] = {**compared, "app_memory_after_rounds": app.memory()}
    finally:
        if app is not None:
            app.stop()
    if starts:
        summary = {k: _round(_median([s[k] for s in starts]), 3) for k in starts[0] if k != "peak_rss_mib"}
        summary["peak_rss_mib"] = max(s["peak_rss_mib"] or 0 for s in starts)
        result["cold_start"] = {**summary, "mode": options.cpu_mode, "runs": starts}

    result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = evaluate_targets(result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="folder of full weights + tokenizer, or 'embedded'")
    parser.add_argument("--cache-dir", type=Path, help="MEDCOT_CACHE_DIR for the embedded model")
    parser.add_argument("--cpu-mode", default=os.environ.get("MEDCOT_CPU_MODE", "").strip() or "auto")
    parser.add_argument("--modes", default=",".join(m for m in CPU_MODES if m != "auto"), help="'' skips them")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds, per comparison")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--cold-starts", type=int, default=2)
    parser.add_argument("--question", default=APP_QUESTION, help="asked of the app and the raw model")
    parser.add_argument("--out", type=Path, default=Path("docs/bench/bench.json"))
    parser.add_argument("--chart", type=Path, default=Path("docs/bench/bench.png"))
    parser.add_argument("--quick", action="store_true", help="2 rounds, 32 tokens, 1 cold start, f32 + served mode")
    parser.add_argument("--markdown", type=Path, metavar="JSON", help="print a result's table as Markdown; no run")
    args = parser.parse_args(argv)
    if args.markdown:
        print(format_markdown(json.loads(args.markdown.read_text(encoding="utf-8"))))
        return 0
    cache_dir = args.cache_dir or (
        Path(os.environ["MEDCOT_CACHE_DIR"]) if os.environ.get("MEDCOT_CACHE_DIR") else None
    )
    options = Options(
        model=args.model,
        cache_dir=cache_dir,
        cpu_mode=args.cpu_mode,
        modes=[m.strip() for m in args.modes.split(",") if m.strip()],
        rounds=args.rounds,
        mode_rounds=args.rounds,
        new_tokens=args.new_tokens,
        cold_starts=args.cold_starts,
        question=args.question,
    )
    if args.quick:
        options.rounds = options.mode_rounds = 2
        options.new_tokens = 32
        options.cold_starts = 1
        options.modes = ["f32"]
    result = run_benchmark(options)
    result["command"] = " ".join(["python -m medcot.bench", *(sys.argv[1:] if argv is None else argv)])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    draw_chart(result, args.chart)
    print(format_table(result))
    print(f"wrote {args.out} and {args.chart}")
    return 0  # a benchmark reports; the targets' pass/fail is in the table and the JSON


if __name__ == "__main__":
    sys.exit(main())
