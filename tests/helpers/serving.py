"""The app served on loopback for tests, as app.py builds it (bounded queue, the Space's launch arguments)."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import gradio as gr

from medcot.engine import Engine
from medcot.ui.layout import build_demo, launch_kwargs, queue


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def launched(engine: Engine, stream: Any = None) -> Iterator[tuple[str, gr.Blocks]]:
    """The running app's URL and Blocks; closed on exit."""
    demo = queue(build_demo(engine, stream=stream), engine)
    _, url, _ = demo.launch(
        prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True, **launch_kwargs()
    )
    try:
        yield url, demo
    finally:
        demo.close()


@contextlib.contextmanager
def serve(engine: Engine, stream: Any = None) -> Iterator[str]:
    with launched(engine, stream) as (url, _):
        yield url
