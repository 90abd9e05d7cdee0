"""app.py, the Space's entry point, run as `python app.py` is."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from serving import free_port
from tiny import TinyRepos

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_python_app_prints_the_load_progress_to_the_terminal(tiny_repos: TinyRepos) -> None:
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
        [sys.executable, "app.py"], cwd=ROOT, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:  # in a thread: a readline() that never returns must not hang the test
        for line in app.stderr:
            lines.append(line.rstrip("\n"))
            if line.startswith("… Model ready"):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(200)  # importing gradio and torch on 2 busy cores
    finally:
        app.kill()
        app.wait(30)
        reader.join(10)

    progress = [line for line in lines if line.startswith("… ")]
    assert progress[-1:] == ["… Model ready (100%)"], lines[-20:]
    assert any(line.startswith("… Loading the base model") for line in progress)
    assert any(line.startswith("… Applying the adapter") for line in progress)
