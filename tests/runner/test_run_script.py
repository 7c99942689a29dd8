"""`./run`'s install decisions: what each command installs, when it installs again, and that it says so.

The script runs for real, in a copy of the repository's `run` with stand-ins for `python3` (the venv and
pip), `npm` and `node` on PATH that only record how they were called: the decisions are the script's, and
a real install (a minute of downloads) is measured by hand (bench/RESULTS.md), not here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.procs import ROOT

# A stand-in interpreter: `-m venv DIR` makes DIR/bin/{python,xds-control} (copies of itself); anything
# else is recorded in $CALLS. `-m pip install` fails when $PIP_FAILS is set.
FAKE_PYTHON = r"""#!/usr/bin/env bash
echo "$(basename "$0") $*" >>"$CALLS"
if [[ $1 == -m && $2 == venv ]]; then
  mkdir -p "$3/bin"
  cp "$0" "$3/bin/python"
  cp "$0" "$3/bin/xds-control"
elif [[ $1 == -m && $2 == pip ]]; then
  echo "Collecting something"
  [[ -z ${PIP_FAILS:-} ]] || { echo "ERROR: no such package"; exit 1; }
  echo "Successfully installed something"
fi
"""
FAKE_NPM = r"""#!/usr/bin/env bash
echo "npm $*" >>"$CALLS"
mkdir -p "$3/node_modules"
"""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "examples" / "third_party").mkdir(parents=True)
    shutil.copy(ROOT / "run", root / "run")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    for name in ("package.json", "package-lock.json"):
        (root / "examples" / "third_party" / name).write_text("{}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("python3", FAKE_PYTHON), ("npm", FAKE_NPM), ("node", "#!/bin/sh\n")):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return root


def run(repo: Path, *args: str, **env: str) -> tuple[list[str], str]:
    """`./run ARGS` in the copy: (the calls the stand-ins saw, stderr)."""
    calls = repo.parent / "calls"
    calls.write_text("")
    environ = {**os.environ, "PATH": f"{repo.parent / 'bin'}:/usr/bin:/bin", "CALLS": str(calls), **env}
    done = subprocess.run(["./run", *args], cwd=repo, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == (1 if env.get("PIP_FAILS") else 0), done.stderr
    return calls.read_text().splitlines(), done.stderr


def test_up_installs_the_project_without_test_extras_or_npm_and_says_how_long_each_step_took(repo: Path) -> None:
    calls, err = run(repo, "up", "--quiet")
    assert calls == [
        "python3 -m venv .venv",
        "python -m pip install --disable-pip-version-check -e .",
        "xds-control up --quiet",
    ]
    lines = err.splitlines()
    assert lines[0] == "run: creating .venv"
    assert lines[1].startswith("run: created .venv (") and lines[1].endswith(" s)")
    assert lines[2].startswith("run: installing the gateway and its dependencies (Envoy included) into .venv")
    assert "Collecting something" in lines[3:]  # pip's own progress, live
    assert lines[-1].startswith("run: installed the gateway") and lines[-1].endswith(" s)")
    assert "Collecting something" in (repo / ".venv" / ".xds-control-install.log").read_text()
    calls, err = run(repo, "up")
    assert calls == ["xds-control up"] and err == ""  # installed: nothing to do


def test_test_installs_the_test_extras_and_npm_once_and_up_reuses_that_install(repo: Path) -> None:
    run(repo, "up")
    calls, err = run(repo, "test", "-k", "x")
    assert calls == [
        "python -m pip install --disable-pip-version-check -e .[test]",
        "npm ci --prefix examples/third_party --no-audit --no-fund --loglevel=error",
        "python -m pytest -n 2 -k x",
    ]
    assert "run: installing the third-party MCP servers for the tests" in err
    assert run(repo, "test")[0] == ["python -m pytest -n 2"]
    assert run(repo, "up")[0] == ["xds-control up"]


def test_a_changed_pyproject_installs_again_and_an_old_stamp_counts_as_the_test_install(repo: Path) -> None:
    run(repo, "up")
    with (repo / "pyproject.toml").open("a") as f:
        f.write("# changed\n")
    assert run(repo, "up")[0] == ["python -m pip install --disable-pip-version-check -e .", "xds-control up"]
    stamp = repo / ".venv" / ".xds-control-install"
    stamp.write_text(stamp.read_text().split()[0] + "\n")  # the format before extras were recorded
    assert run(repo, "test")[0][0] == "npm ci --prefix examples/third_party --no-audit --no-fund --loglevel=error"


def test_a_failed_install_exits_1_naming_the_log_and_installs_again_next_time(repo: Path) -> None:
    calls, err = run(repo, "up", PIP_FAILS="1")
    assert "ERROR: no such package" in err and "run: installing the project failed (log: .venv/" in err
    assert calls[-1].startswith("python -m pip install")  # never started the gateway
    assert run(repo, "up")[0] == ["python -m pip install --disable-pip-version-check -e .", "xds-control up"]
