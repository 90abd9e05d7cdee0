"""`python app.py` as a child process: started, timed until it listens, measured and stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.machine import process_memory
from medcot.model.embedded import EMBEDDED_ID

APP_FILE = Path(__file__).resolve().parent.parent / "app.py"
START_TIMEOUT_S = 300.0  # a first start may convert the embedded GGUF (~1 min on 2 cores)


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

    def wait_until_listening(self, timeout: float = START_TIMEOUT_S) -> float:
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
