"""The backend status `xds-control up` shows, fed by the admin Watch stream: plain change lines with
`--quiet`, a live table on a terminal (run in a pseudo-terminal here)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.procs import ROOT, Proc, demo_backend
from tests.support.stack import stack_config
from tests.support.waiting import free_port, wait_until
from xds_control.config import dump_config

pytestmark = pytest.mark.integration

START = 60.0  # the whole stack on a loaded 2-core machine
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\r")


@pytest.fixture
def weather() -> Iterator[list[Proc]]:
    procs = [demo_backend("weather", free_port())]
    yield procs
    for proc in procs:
        proc.stop()


@pytest.fixture
def config(tmp_path: Path, weather: list[Proc]) -> Path:
    port = int(weather[0].wait_for_line("READY").rsplit(":", 1)[1].split("/")[0])
    cfg = stack_config(
        [{"name": "weather", "url": f"http://127.0.0.1:{port}/mcp"}],
        health={"interval": "200ms", "unhealthy_threshold": 1},
    )
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    return path


def test_quiet_up_logs_a_plain_line_for_each_backend_change(config: Path, weather: list[Proc]) -> None:
    proc = Proc([sys.executable, "-m", "xds_control.cli", "up", "--quiet", "-c", str(config)], name="xds-control-up")
    try:
        proc.wait_for_line("MCP endpoint:", timeout=START)
        proc.wait_for_line("backend weather: healthy (breaker closed, routable, 3 tools, endpoints 1/1 up)", timeout=20)
        weather[0].kill()
        line = proc.wait_for_line("backend weather: unhealthy (", timeout=20)
        assert "not routable" in line
        assert (
            "last error connection_refused" in line or "last error connection_reset" in line
        )  # (reset: killed mid-probe)
        proc.signal(signal.SIGTERM)
        assert proc.popen.wait(timeout=30) == 0
    finally:
        proc.stop()
    assert "xds-control · " not in proc.output, "no live table without a terminal"


class Terminal:
    """A process on a pseudo-terminal (160x50), its screen output collected as plain text."""

    def __init__(self, argv: list[str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "160", "LINES": "50", "PYTHONUNBUFFERED": "1"}
        env.pop("NO_COLOR", None)
        self.popen = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=ROOT, start_new_session=True
        )
        os.close(slave)
        self.master = master
        self.raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if not ready:
                if self.popen.poll() is not None:
                    return
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO: the other side is closed
                return
            if not data:
                return
            with self._lock:
                self.raw.extend(data)

    @property
    def text(self) -> str:
        with self._lock:
            return ANSI.sub("", self.raw.decode(errors="replace"))

    def stop(self) -> int:
        """SIGTERM the process group (SIGKILL after 30 s); its exit code. Idempotent."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
        code = self.popen.wait(timeout=10)
        self._reader.join(timeout=5)
        if self.master >= 0:
            os.close(self.master)
            self.master = -1
        return code


def table_row(text: str, name: str) -> list[str] | None:
    """The last drawn row of `name` in the table, as cells."""
    rows = [line for line in text.splitlines() if line.startswith(f"│ {name} ")]
    return [cell.strip() for cell in rows[-1].strip("│ ").split("│")] if rows else None


def test_up_on_a_terminal_draws_a_live_table_that_follows_the_view(config: Path, weather: list[Proc]) -> None:
    term = Terminal([sys.executable, "-m", "xds_control.cli", "up", "-c", str(config)])
    try:
        wait_until(lambda: "MCP endpoint:" in term.text, timeout=START, what="the endpoint line")
        wait_until(
            lambda: (table_row(term.text, "weather") or [""])[1:2] == ["healthy"],
            timeout=20,
            what="weather healthy in the table",
        )
        text = term.text
        assert "xds-control · 1 backend · view" in text
        assert re.search(
            r"NAME\s*┃\s*STATE\s*┃\s*BREAKER\s*┃\s*ROUTABLE\s*┃\s*LAST PROBE\s*┃\s*TOOLS\s*┃\s*LAST ERROR\s*┃\s*ENDPOINTS",
            text,
        )
        row = table_row(text, "weather")
        assert (
            row is not None and row[:4] == ["weather", "healthy", "closed", "yes"] and row[5:] == ["3", "-", "1/1 up"]
        )
        assert re.fullmatch(r"\d+ms", row[4])

        weather[0].kill()
        wait_until(
            lambda: (table_row(term.text, "weather") or [""])[1:2] == ["unhealthy"],
            timeout=20,
            what="the table to show weather unhealthy",
        )
        row = table_row(term.text, "weather")
        assert row is not None and row[3] == "no" and row[7] == "0/1 up"
        assert row[6] in ("connection_refused", "connection_reset")  # (reset: killed mid-probe)
        assert "backend weather: healthy (" not in term.text, "the table, not change lines, on a terminal"
        assert term.stop() == 0
    finally:
        term.stop()
    assert "stopped" in term.text.splitlines()[-1]
