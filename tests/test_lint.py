"""The code stays lint-clean, formatted and type-checked: `ruff check`, `ruff format --check` over the project's
Python, and `mypy` over the package (strict on the pure cores; the configuration is `[tool.mypy]` in pyproject.toml,
its cache `.mypy_cache/` makes a second run take about a second)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["xds_control", "tests", "bench", "examples"]


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "args", [("check", "--output-format", "concise"), ("format", "--check")], ids=["lint", "format"]
)
def test_ruff_is_clean(args):
    done = _ruff(*args)
    assert done.returncode == 0, f"ruff {' '.join(args)}:\n{done.stdout}{done.stderr}"


def test_mypy_is_clean():
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary", "--no-pretty"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"mypy:\n{done.stdout}{done.stderr}"
