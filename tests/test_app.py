"""app.py, the Space's entry point, run as `python app.py` is."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.helpers.serving import free_port
from tests.helpers.tiny import TinyRepos

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(330)
def test_python_app_prints_the_load_progress_and_starts_without_warnings(tiny_repos: TinyRepos) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "MEDCOT_BASE_MODEL": str(tiny_repos.base),
        "MEDCOT_ADAPTER": str(tiny_repos.adapter),
        "MEDCOT_DTYPE": "float32",
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
    }
    app = subprocess.Popen(
        [sys.executable, "app.py"], cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    lines: list[str] = []
    ready, launched = threading.Event(), threading.Event()

    def read_stderr() -> None:  # in a thread: a readline() that never returns must not hang the test
        for line in app.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("… Model ready"):
                ready.set()

    def read_stdout() -> None:
        for line in app.stdout:
            if "Running on local URL" in line:  # printed once launch() (and its MCP server) is up
                launched.set()

    readers = [threading.Thread(target=read, daemon=True) for read in (read_stderr, read_stdout)]
    for reader in readers:
        reader.start()
    try:
        ready.wait(200)  # importing gradio and torch on 2 busy cores
        launched.wait(60)
    finally:
        app.kill()
        app.wait(30)
        for reader in readers:
            reader.join(10)

    progress = [line for line in lines if line.startswith("… ")]
    assert progress[-1:] == ["… Model ready (100%)"], lines[-20:]
    assert any(line.startswith("… Loading the base model") for line in progress)
    assert any(line.startswith("… Applying the adapter") for line in progress)
    assert launched.is_set(), lines[-20:]
    # Every start used to print Gradio's MCP gr.State UserWarning (issue 14): a clean start prints none.
    assert not [line for line in lines if "Warning" in line], lines
