"""Load failures (issue 6): each gives one readable message in the log, the CLI and the UI, and the app stays up.

Models on disk are real (a base of another shape, corrupted adapter files); the Hugging Face Hub cannot be reached
from tests, so only its answers are stood in for: medcot.model.hub.snapshot_download raises the errors
huggingface_hub itself raises (built by its own hf_raise_for_status from an HTTP response) or a connection error.
"""

from __future__ import annotations

import json
import logging
import shutil
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import httpx
import httpx2
import pytest
from huggingface_hub.errors import LocalEntryNotFoundError
from huggingface_hub.utils import hf_raise_for_status
from transformers import Gemma3ForCausalLM, Gemma3TextConfig

import medcot.model.embedded_fallback
import medcot.model.hub
from medcot.cli import main as cli_main
from medcot.config import Settings
from medcot.engine import Engine
from tests.helpers import tiny
from tests.helpers.serving import serve
from tests.helpers.tiny import QUESTIONS, TinyRepos

QUESTION = QUESTIONS[0]
# pytest-timeout counts fixture set-up: the first test to run also builds the session's tiny models (about a
# minute, at worst over two, on a busy 2-core machine). Each limit below is that allowance plus the test's own bound.
FIXTURES_S = 240


def hub_answers(status: int, url: str, **headers: str) -> Callable[..., NoReturn]:
    """A snapshot_download that gets this HTTP answer from the Hub, raising what huggingface_hub raises for it."""

    def snapshot_download(repo_id: str, **kwargs: Any) -> NoReturn:
        hf_raise_for_status(httpx2.Response(status, headers=headers, request=httpx2.Request("GET", url)))
        raise AssertionError(f"huggingface_hub raised nothing for HTTP {status}")

    return snapshot_download


def unreachable(error: Exception) -> Callable[..., NoReturn]:
    def snapshot_download(repo_id: str, **kwargs: Any) -> NoReturn:
        raise error

    return snapshot_download


OFFLINE = LocalEntryNotFoundError(  # what snapshot_download raises when the Hub cannot be reached (its wording)
    "Got: ConnectError: [Errno -3] Temporary failure in name resolution\nAn error happened while trying to locate "
    "the files on the Hub, and we cannot find the appropriate snapshot folder for the specified revision on the "
    "local disk. Please check your internet connection and try again."
)


@dataclass
class Case:
    """How to break the load (settings, and what to put in place), and what the message must say."""

    settings: Callable[[TinyRepos, Path, Path], Settings]  # (tiny repos, a scratch folder, another base)
    needles: tuple[str, ...]
    download: Callable[..., NoReturn] | None = None  # stands in for snapshot_download
    no_embedded: bool = False


def _adapter_copy(repos: TinyRepos, scratch: Path, damage: Callable[[Path], None]) -> Settings:
    adapter = scratch / "adapter"
    shutil.copytree(repos.adapter, adapter)
    damage(adapter)
    return Settings(base_model=str(repos.base), adapter=str(adapter), dtype="float32")


def _base_copy(repos: TinyRepos, scratch: Path, damage: Callable[[Path], None]) -> Settings:
    base = scratch / "base"
    shutil.copytree(repos.base, base)
    damage(base)
    return Settings(base_model=str(base), adapter=None, dtype="float32")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


HUB_REPO = "https://huggingface.co/api/models/acme/{}/revision/main"
CASES = {
    "missing folder": Case(
        lambda r, s, o: Settings(base_model=str(s / "no-such-model"), adapter=None, dtype="float32"),
        ("does not exist", "Check the path"),
    ),
    "missing repo": Case(
        lambda r, s, o: Settings(base_model="acme/no-such-model", adapter=None, dtype="float32"),
        ("was not found on the Hugging Face Hub", "Check the repo id"),
        hub_answers(401, HUB_REPO.format("no-such-model"), **{"X-Error-Code": "RepoNotFound"}),
    ),
    "gated base without a token": Case(
        lambda r, s, o: Settings(base_model="acme/gated-base", adapter=str(r.adapter), dtype="float32"),
        ("is gated", "Accept its license", "set HF_TOKEN"),
        hub_answers(
            401,
            "https://huggingface.co/acme/gated-base/resolve/main/config.json",
            **{"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to model acme/gated-base is restricted."},
        ),
    ),
    "invalid token": Case(
        lambda r, s, o: Settings(base_model="acme/base", adapter=None, dtype="float32", hf_token="hf_expired"),
        ("HF_TOKEN is invalid or expired",),
        hub_answers(
            401, HUB_REPO.format("base"), **{"X-Error-Message": "Invalid credentials in Authorization header"}
        ),
    ),
    "adapter for another base": Case(
        lambda r, s, o: Settings(base_model=str(o), adapter=str(r.adapter), dtype="float32"),
        ("does not fit the base model", "MEDCOT_BASE_MODEL"),
    ),
    "corrupt adapter weights": Case(
        lambda r, s, o: _adapter_copy(r, s, lambda a: (a / "adapter_model.safetensors").write_bytes(b"\0junk" * 99)),
        ("is corrupt or unreadable",),
    ),
    "truncated adapter weights": Case(
        lambda r, s, o: _adapter_copy(r, s, lambda a: _truncate(a / "adapter_model.safetensors")),
        ("is corrupt or unreadable",),
    ),
    "corrupt adapter config": Case(
        lambda r, s, o: _adapter_copy(r, s, lambda a: (a / "adapter_config.json").write_text("{not json")),
        ("is corrupt or unreadable",),
    ),
    "adapter without weights": Case(
        lambda r, s, o: _adapter_copy(r, s, lambda a: (a / "adapter_model.safetensors").unlink()),
        ("has no weights file", "incomplete"),
    ),
    "corrupt base weights": Case(
        lambda r, s, o: _base_copy(r, s, lambda b: (b / "model.safetensors").write_bytes(b"\0junk" * 99)),
        ("is corrupt or unreadable",),
    ),
    "no network": Case(
        lambda r, s, o: Settings(base_model="acme/base", adapter="acme/adapter", dtype="float32"),
        ("cannot be reached", "not in the local cache", "local folder"),
        unreachable(OFFLINE),
    ),
    "connection refused": Case(
        lambda r, s, o: Settings(base_model="acme/base", adapter=None, dtype="float32"),
        ("cannot be reached", "local folder"),
        unreachable(httpx2.ConnectError("[Errno 111] Connection refused")),
    ),
    "no network, default models, no embedded model": Case(
        lambda r, s, o: Settings(),
        ("cannot be reached", "MEDCOT_BASE_MODEL=embedded"),
        unreachable(OFFLINE),
        no_embedded=True,
    ),
}


@pytest.fixture(scope="module")
def other_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real tiny Gemma 3 of another width: the tiny adapter's LoRA weights do not fit it."""
    tokenizer = tiny.build_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=1024,
        sliding_window=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tmp_path_factory.mktemp("other-base")
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(params=list(CASES))
def broken(
    request: pytest.FixtureRequest,
    tiny_repos: TinyRepos,
    other_base: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Settings:
    case = CASES[request.param]
    if case.download is not None:
        monkeypatch.setattr(medcot.model.hub, "snapshot_download", case.download)
    else:  # a local load must never go to the Hub
        monkeypatch.setattr(medcot.model.hub, "snapshot_download", unreachable(AssertionError("went to the Hub")))
    if case.no_embedded:
        monkeypatch.setattr(medcot.model.embedded_fallback, "embedded_installed", lambda: False)
    return case.settings(tiny_repos, tmp_path, other_base)


def assert_readable(message: str | None, needles: tuple[str, ...]) -> None:
    assert message, "no message"
    assert "\n" not in message and "Traceback" not in message and len(message) < 400, message
    for needle in needles:
        assert needle in message, message


def rest_call(url: str, api: str, question: str) -> tuple[str, Any]:
    """One call through Gradio's REST API, as any HTTP client makes it: the final event and its data."""
    params = [64, 1.0, 0.95, 64, 1.0]
    values = [question, *params, False] if api == "ask" else [question, None, *params]
    with httpx.Client(timeout=30) as http:
        joined = http.post(f"{url}gradio_api/call/{api}", json={"data": values})
        joined.raise_for_status()
        lines = http.get(f"{url}gradio_api/call/{api}/{joined.json()['event_id']}").text.splitlines()
    event = next(line.removeprefix("event: ") for line in reversed(lines) if line.startswith("event: "))
    data = json.loads(next(line.removeprefix("data: ") for line in reversed(lines) if line.startswith("data: ")))
    return event, data.get("error") if isinstance(data, dict) else data


@pytest.mark.timeout(FIXTURES_S + 60)
def test_load_failure_is_one_readable_message_in_the_log_the_cli_and_the_ui(
    broken: Settings, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    needles = CASES[request.node.callspec.params["broken"]].needles

    # The log: one error record, the message itself, no traceback.
    caplog.set_level(logging.INFO)
    engine = Engine(broken).load()
    assert not engine.ready
    assert_readable(engine.error, needles)
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert [record.getMessage() for record in errors] == [f"model load failed: {engine.error}"], caplog.text
    assert errors[0].exc_info is None

    # The CLI: progress lines, then one error line with the same message; exit code 1 and nothing on stdout.
    assert cli_main([QUESTION], engine=Engine(broken)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1] == f"error: {engine.error}", err
    assert "Traceback" not in err and sum(line.startswith("error:") for line in err.splitlines()) == 1, err

    # The UI: the status says it, /ask and /chat answer with it, and the app keeps serving.
    with serve(engine) as url:
        config = httpx.get(f"{url}config", timeout=30).json()
        shown = [c["props"].get("value") for c in config["components"] if c.get("props", {}).get("value")]
        assert f"**The model is not available.** {engine.error}" in shown
        for api in ("ask", "chat", "ask"):
            event, data = rest_call(url, api, QUESTION)
            assert (event, data) == ("error", engine.error)
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200
