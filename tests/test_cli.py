"""medcot.cli: the answer alone on stdout, reasoning and messages on stderr."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medcot.cli import main
from medcot.engine import Engine
from tests.helpers.tiny import ADAPTER_ANSWER, ADAPTER_REASONING, TinyRepos

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "A 65-year-old with orthopnea and edema. Initial therapy?"


def run_main(capsys: pytest.CaptureFixture[str], argv: list[str], engine: Engine) -> tuple[int, str, str]:
    code = main(argv, engine=engine)
    out, err = capsys.readouterr()
    return code, out, err


def test_answer_on_stdout_reasoning_on_stderr(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, [QUESTION, "--temperature", "0"], engine)
    assert code == 0
    assert out == ADAPTER_ANSWER + "\n"
    assert ADAPTER_REASONING in err and "[thought for " in err
    assert ADAPTER_ANSWER not in err
    assert "\x1b[" not in err  # not a terminal: no colour codes


def test_no_reasoning_hides_it(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, [QUESTION, "--temperature", "0", "--no-reasoning"], engine)
    assert code == 0
    assert out == ADAPTER_ANSWER + "\n"
    assert "Fluid overload" not in err and "thought for" not in err


def test_question_from_stdin(
    engine: Engine, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(QUESTION + "\n"))
    code, out, _ = run_main(capsys, ["--temperature", "0", "--no-reasoning"], engine)
    assert (code, out) == (0, ADAPTER_ANSWER + "\n")


def test_stats_on_stderr(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, [QUESTION, "--temperature", "0", "--no-reasoning", "--stats"], engine)
    assert code == 0 and out == ADAPTER_ANSWER + "\n"
    assert " reasoning, " in err and "tok/s" in err


def test_token_limit_cut_off_is_reported(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, [QUESTION, "--temperature", "0", "--max-new-tokens", "5"], engine)
    assert code == 0 and out == "\n"
    assert "reasoning cut off by the token limit" in err


def test_an_answer_cut_off_by_the_token_limit_says_so_on_stderr(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    # Room for the reasoning and one token of the answer: the answer itself is cut.
    reasoning = f"<think>\n{ADAPTER_REASONING}\n</think>\n"
    limit = len(engine.loaded.tokenizer.encode(reasoning, add_special_tokens=False)) + 1
    code, out, err = run_main(capsys, [QUESTION, "--temperature", "0", "--max-new-tokens", str(limit)], engine)
    assert code == 0 and out.strip() and out.strip() != ADAPTER_ANSWER
    assert f"[answer cut off by the token limit ({limit} tokens); raise --max-new-tokens]" in err
    assert "reasoning cut off" not in err


def test_a_finished_answer_gets_no_cut_off_note(engine: Engine, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capsys, [QUESTION, "--temperature", "0"], engine)
    assert code == 0 and out.strip() == ADAPTER_ANSWER
    assert "cut off" not in err and "no answer" not in err


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["   "], "Please type a question"),
        (["", "--temperature", "0"], "Please type a question"),
        ([QUESTION, "--temperature", "9"], "temperature"),
        ([QUESTION, "--max-new-tokens", "0"], "max_new_tokens"),
    ],
)
def test_bad_input_is_one_error_line(
    engine: Engine, capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    code, out, err = run_main(capsys, argv, engine)
    assert code == 1
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err
    assert "Traceback" not in err


def test_empty_question_is_refused_before_loading(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(" \n"))
    code = main(["--base-model", str(tmp_path / "missing"), "--adapter", ""])
    out, err = capsys.readouterr()
    assert (code, out, err) == (1, "", "error: Please type a question.\n")


def test_bad_environment_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDCOT_DTYPE", "float64")
    code = main([QUESTION])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert err.startswith("error: MEDCOT_DTYPE") and err.count("\n") == 1


def test_missing_model_folder_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MEDCOT_DTYPE", "float32")
    code = main([QUESTION, "--base-model", str(tmp_path / "missing"), "--adapter", ""])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    last = err.splitlines()[-1]
    assert last.startswith("error: ") and "does not exist" in last and "Traceback" not in err


def _cli(tiny_repos: TinyRepos, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MEDCOT_BASE_MODEL": str(tiny_repos.base),
        "MEDCOT_ADAPTER": str(tiny_repos.adapter),
        "MEDCOT_DTYPE": "float32",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("NO_COLOR", None)
    return subprocess.run(
        [sys.executable, "-m", "medcot", "--temperature", "0", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=240,
        check=False,
    )


def test_python_m_medcot_end_to_end(tiny_repos: TinyRepos) -> None:
    done = _cli(tiny_repos, stdin=QUESTION)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ADAPTER_ANSWER + "\n"
    assert ADAPTER_REASONING in done.stderr


def test_python_m_medcot_empty_question(tiny_repos: TinyRepos) -> None:
    done = _cli(tiny_repos, "--no-reasoning", stdin="  \n")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines()[-1] == "error: Please type a question."
    assert "Traceback" not in done.stderr


def test_one_question_decodes_eagerly_unless_compiling_is_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal asks one question: no background compilation (its tracing would delay the first token)."""
    from medcot.cli import _settings, build_parser

    monkeypatch.delenv("MEDCOT_DECODE", raising=False)
    monkeypatch.delenv("MEDCOT_DEVICE", raising=False)
    assert _settings(build_parser().parse_args(["q"])).decode == "static"
    monkeypatch.setenv("MEDCOT_DEVICE", "cuda")  # on a GPU auto stays generate()
    assert _settings(build_parser().parse_args(["q"])).decode == "auto"
    monkeypatch.setenv("MEDCOT_DEVICE", "cpu")
    monkeypatch.setenv("MEDCOT_SERVER_URL", "http://127.0.0.1:9/v1")  # server mode: no local weights to decode
    assert _settings(build_parser().parse_args(["q"])).decode == "auto"
    monkeypatch.delenv("MEDCOT_SERVER_URL")
    monkeypatch.setenv("MEDCOT_DECODE", "compiled")
    assert _settings(build_parser().parse_args(["q"])).decode == "compiled"
