"""One greedy /chat request through gradio_client, with the time each streamed update arrived."""

from __future__ import annotations

import collections
import re
import time
from typing import Any

from benchmarks.app_process import START_TIMEOUT_S, AppProcess
from medcot.ui.stats_line import is_stats_line

_RETRY_S = 0.1  # while the model loads, a request is refused at once; ask again this often
_STATS_TOKENS = re.compile(r"(\d+) tokens \(")
_STATS_TTFT = re.compile(r"first token ([\d.]+) s")
_STATS_RATE = re.compile(r"([\d.]+) tok/s")


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
    return "".join(text for text in texts if not is_stats_line(text))


def stats_line(messages: Any) -> str | None:
    return next((t for m in messages or [] if is_stats_line(t := _message_text(m))), None)


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

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        app.check_alive()
        try:
            return serve_once(client, question, new_tokens)
        except AppError as exc:
            if not is_loading_refusal(exc) or time.monotonic() > deadline:
                raise
        time.sleep(_RETRY_S)


def parse_stats(line: str | None) -> dict[str, float | int | None]:
    """The figures back from a stats line: tokens generated, time to first text (s), tokens/s; None where absent."""

    def number(pattern: re.Pattern[str], kind: type) -> float | int | None:
        found = pattern.search(line or "")
        return kind(found.group(1)) if found else None

    return {
        "tokens": number(_STATS_TOKENS, int),
        "server_ttft_s": number(_STATS_TTFT, float),
        "server_tok_s": number(_STATS_RATE, float),
    }
