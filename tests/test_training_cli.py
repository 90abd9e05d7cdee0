"""`python -m training` as a user runs it (subprocesses): each bad input is one line and exit status 2; a run on
the embedded base (a tiny one standing in its cache) gives an adapter the app's loader serves, answering otherwise
than the base; Ctrl-C leaves a checkpoint that --resume continues."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from medcot.config import GenerationParams, Settings
from medcot.engine import Engine
from medcot.model import embedded
from medcot.request import Query
from tests.helpers.tiny import BASE_OUTPUT, TinyRepos, write_training_rows

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "Fever and neck stiffness in a child. Next step?"
GREEDY = GenerationParams(temperature=0, max_new_tokens=32)
# Quick, and enough to move the tiny model (tests/tiny.py tiny_recipe's values).
TINY = ["--batch-size", "2", "--learning-rate", "1e-2", "--max-length", "512", "--lora-r", "8"]


def training(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_training_rows(tmp_path_factory.mktemp("rows") / "rows.jsonl", repeats=4)


@pytest.fixture(scope="module")
def tiny_embedded_cache(tiny_repos: TinyRepos, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A MEDCOT_CACHE_DIR whose converted embedded base is the tiny base (it answers "Rest and fluids."; marker and
    sizes as the conversion writes them), so that --base embedded and MEDCOT_BASE_MODEL=embedded find it without
    converting the real GGUF."""
    package = embedded._package()
    cache = tmp_path_factory.mktemp("medcot-cache")
    folder = cache / f"{embedded._folder_prefix(package.EXPECTED_SHA256)}{embedded._FORMAT}"
    shutil.copytree(tiny_repos.base, folder)
    marker = {
        **embedded._expected_marker(package.EXPECTED_SHA256),
        "sizes": {name: (folder / name).stat().st_size for name in embedded._FILES},
    }
    (folder / embedded._MARKER).write_text(json.dumps(marker))
    return cache


def one_line_error(run: subprocess.CompletedProcess, message: str, after: tuple[str, ...] = ()) -> None:
    """Exit status 2, the message as stderr's one line (after the log lines named in ``after``), no traceback."""
    assert run.returncode == 2, run.stderr
    *before, last = run.stderr.strip().splitlines()
    assert message in last and last.startswith(("error: ", "python -m training: error: ")), run.stderr
    assert [line.split(":")[0] for line in before] == list(after), run.stderr
    assert "Traceback" not in run.stderr and run.stdout == ""


def test_bad_inputs_are_one_line_each(rows: Path, tmp_path: Path) -> None:
    (tmp_path / "cols.jsonl").write_text('{"Question": "q", "Answer": "a"}\n')
    (tmp_path / "blank.jsonl").write_text('{"Question": "q", "Complex_CoT": "", "Response": "r"}\n')
    (tmp_path / "typo.yaml").write_text("max_step: 3\n")
    out = ["--output", str(tmp_path / "out")]
    cases = {
        "missing file": (["--data", str(tmp_path / "none.jsonl"), *out], "does not exist"),
        "missing columns": (["--data", str(tmp_path / "cols.jsonl"), *out], "lacks the columns Complex_CoT, Response"),
        "empty dataset": (["--data", str(tmp_path / "blank.jsonl"), *out], "no rows with a non-blank"),
        "unknown recipe key": (["--data", str(rows), "--config", str(tmp_path / "typo.yaml"), *out], "'max_step'"),
        "out-of-range value": (["--data", str(rows), "--learning-rate", "5", *out], "learning_rate must be between"),
        "eval rows": (["--data", str(rows), "--eval-rows", "12", *out], "--eval-rows must be between 0 and 11"),
        "resume nothing": (["--data", str(rows), "--resume", *out], "holds no checkpoint-N folder"),
        "not a number": (["--data", str(rows), "--max-steps", "many", *out], "argument --max-steps: invalid int"),
    }
    for args, message in cases.values():
        one_line_error(training(*args), message)


def test_a_base_that_cannot_load_is_one_line(rows: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-base"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "gemma3_text"')  # cut short
    run = training("--data", str(rows), "--base", str(broken), "--output", str(tmp_path / "out"))
    one_line_error(run, f"error: The base model {broken} cannot be loaded", after=("data", "device"))
    missing = training("--data", str(rows), "--base", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    one_line_error(missing, f"The base model folder `{tmp_path / 'nope'}` does not exist", after=("data", "device"))


@pytest.mark.slow
def test_embedded_run_serves_in_the_app_beside_the_base(rows: Path, tiny_embedded_cache: Path, tmp_path: Path) -> None:
    output = tmp_path / "adapter"
    env = {"MEDCOT_CACHE_DIR": str(tiny_embedded_cache)}
    run = training("--base", "embedded", "--data", str(rows), "--output", str(output), "--max-steps", "20",
                   "--eval-rows", "3", *TINY, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "device: CPU (no CUDA): float32 weights, adamw_torch" in run.stderr
    assert "Training: 100%" in run.stderr and "tok/s=" in run.stderr and "loss=" in run.stderr
    assert "eval loss: " in run.stderr and "held-out loss" in run.stderr and f"Adapter in {output}" in run.stderr
    assert run.stdout == ""
    summary = json.loads((output / "training_summary.json").read_text())
    assert (summary["base_model"], summary["steps"], summary["data"]["eval_rows"]) == ("embedded", 20, 3)
    assert summary["final_loss"] < summary["losses"][0]["loss"] and summary["eval_loss"] is not None
    assert json.loads((output / "adapter_config.json").read_text())["base_model_name_or_path"] == "embedded"
    assert "Not for clinical use" in (output / "README.md").read_text()

    # The app's loader: MEDCOT_BASE_MODEL=embedded MEDCOT_ADAPTER=<output>, the comparison on.
    settings = Settings(base_model="embedded", adapter=str(output), cache_dir=tiny_embedded_cache, dtype="float32")
    engine = Engine(settings).load()
    assert engine.ready, engine.error
    assert engine.loaded.kind == "adapter" and engine.compare_unavailable() is None
    tuned = engine.ask(Query(QUESTION, params=GREEDY))
    base = engine.ask(Query(QUESTION, params=GREEDY, use_adapter=False))
    assert base.answer == BASE_OUTPUT
    assert (tuned.reasoning, tuned.answer) != (base.reasoning, base.answer)


@pytest.mark.slow
def test_ctrl_c_then_resume(untrained_base: Path, rows: Path, tmp_path: Path) -> None:
    output = tmp_path / "out"
    args = ["--base", str(untrained_base), "--data", str(rows), "--output", str(output), *TINY]
    process = subprocess.Popen(
        [sys.executable, "-m", "training", *args, "--max-steps", "200"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 600
    while "/200 [" not in seen.split("Training:")[-1] or "| 0/200" in seen.split("Training:")[-1]:
        assert time.monotonic() < deadline and process.poll() is None, seen
        seen += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    rest = process.communicate(timeout=600)[1]
    assert process.returncode == 130, seen + rest
    checkpoints = list(output.glob("checkpoint-*"))
    assert len(checkpoints) == 1 and f"checkpoint saved in {checkpoints[0]}" in rest
    step = int(checkpoints[0].name.split("-")[1])

    again = training(*args, "--max-steps", str(step + 2), "--resume")  # the same run, two more steps
    assert again.returncode == 0, again.stderr
    summary = json.loads((output / "training_summary.json").read_text())
    assert (summary["resumed_from_step"], summary["steps"]) == (step, step + 2)
    assert [entry["step"] for entry in summary["losses"]][-2:] == [step + 1, step + 2]
