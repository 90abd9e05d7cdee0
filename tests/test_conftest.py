"""tests/conftest.py's tiers: a plain `pytest` leaves the slow, browser, zerogpu and vllm tests out; `--all` runs
everything; an -m expression or a test named by its id picks tests past the fast tier. Run by pytest itself (in
this process) on a project of marked dummies that uses this conftest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

MARKED = """
import pytest

def test_fast(): pass

@pytest.mark.slow
def test_slow(): pass

@pytest.mark.browser
def test_browser(): pass

@pytest.mark.zerogpu
def test_zerogpu(): pass

@pytest.mark.vllm
def test_vllm(): pass

@pytest.mark.browser
@pytest.mark.vllm
def test_browser_on_vllm(): pass
"""
EVERY = {"test_fast", "test_slow", "test_browser", "test_zerogpu", "test_vllm", "test_browser_on_vllm"}


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    shutil.copy(Path(__file__).with_name("conftest.py"), pytester.path / "conftest.py")
    pytester.makeini(
        "[pytest]\nmarkers =\n    slow: s\n    browser: b\n    zerogpu: z\n    vllm: v\naddopts = --strict-markers\n"
    )
    pytester.makepyfile(test_marked=MARKED)
    return pytester


def ran(project: pytest.Pytester, *args: str) -> set[str]:
    result = project.runpytest_inprocess("-p", "no:cacheprovider", *args)
    return {report.nodeid.split("::")[-1] for report in result.reprec.getreports("pytest_runtest_logreport")}


def test_a_plain_run_is_the_fast_tier(project: pytest.Pytester) -> None:
    assert ran(project) == {"test_fast"}


def test_all_runs_every_tier(project: pytest.Pytester) -> None:
    assert ran(project, "--all") == EVERY


def test_a_marker_expression_picks_past_the_fast_tier(project: pytest.Pytester) -> None:
    assert ran(project, "-m", "browser") == {"test_browser", "test_browser_on_vllm"}
    assert ran(project, "-m", "not vllm") == EVERY - {"test_vllm", "test_browser_on_vllm"}


def test_a_test_named_by_its_id_runs_whatever_its_tier(project: pytest.Pytester) -> None:
    assert ran(project, "test_marked.py::test_vllm", "test_marked.py::test_fast") == {"test_vllm", "test_fast"}
    assert ran(project, "test_marked.py") == {"test_fast"}
