"""The test harness's child processes (tests/support/procs.py): with a log file, output is read from the file only
when asked for, and waiting for a line works as with a pipe."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.procs import Proc

CHILD = "import sys\nfor i in range(3000):\n    print('line', i)\nprint('READY', flush=True)\nsys.stdin.read()\n"


def test_a_child_writing_to_a_log_file_is_waited_on_and_read_like_a_piped_one(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    with Proc([sys.executable, "-c", CHILD], name="child", log_file=log) as proc:
        assert proc.wait_for_line("READY", timeout=20) == "READY"
        lines = proc.output.splitlines()
        assert lines[0] == "line 0" and lines[2999] == "line 2999" and lines[-1] == "READY"
        assert proc.output.count("READY") == 1  # read once, not again on each call
    assert log.read_text().endswith("READY\n")
    dead = Proc([sys.executable, "-c", "print('bye')"], name="dead", log_file=tmp_path / "dead.log")
    with pytest.raises(AssertionError, match="exited with 0 before printing 'never'"):
        dead.wait_for_line("never", timeout=20)
    dead.stop()
