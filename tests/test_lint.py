"""The code stays lint-clean and formatted: `ruff check` and `ruff format --check` over the project's Python."""

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
