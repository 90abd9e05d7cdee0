"""medcot.ui.model_wait: API clients asking while the model loads wait for it, up to MEDCOT_LOAD_WAIT_S."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from medcot.config import Settings
from medcot.engine import Engine
from medcot.ui.layout import build_demo, launch_kwargs, queue
from tests.helpers.serving import free_port
from tests.helpers.tiny import ADAPTER_ANSWER, QUESTIONS
from tests.helpers.ui_calls import GREEDY


@pytest.mark.timeout(240)
def test_api_clients_wait_for_the_loading_model_and_get_their_answer(tiny_settings: Settings) -> None:
    loading = Engine(replace(tiny_settings, load_wait_s=120))
    demo = queue(build_demo(loading), loading)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **launch_kwargs())
    try:
        client = Client(url, verbose=False)
        asked = client.submit(QUESTIONS[0], *GREEDY, api_name="/ask")
        chatted = client.submit(QUESTIONS[0], *GREEDY, api_name="/chat")
        time.sleep(2)
        assert not asked.done() and not chatted.done()  # waiting, not refused
        threading.Thread(target=loading.load, daemon=True).start()
        assert asked.result(timeout=120) == ADAPTER_ANSWER
        final = chatted.result(timeout=120)
        assert ADAPTER_ANSWER in str(final)
    finally:
        demo.close()


@pytest.mark.timeout(240)
def test_api_clients_get_a_readable_still_loading_message_after_a_bounded_wait(tiny_settings: Settings) -> None:
    loading = Engine(replace(tiny_settings, load_wait_s=1))  # never loaded
    demo = queue(build_demo(loading), loading)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, server_port=free_port(), **launch_kwargs())
    try:
        client = Client(url, verbose=False)
        for endpoint in ("/ask", "/chat"):
            started = time.monotonic()
            with pytest.raises(AppError, match="still loading"):
                client.predict(QUESTIONS[0], *GREEDY, api_name=endpoint)
            assert 1 <= time.monotonic() - started < 60
    finally:
        demo.close()
