"""A child process on a pseudo-terminal, for the live (rich) tables: what it draws, as plain text.

    term = Terminal([sys.executable, "-m", "xds_control.cli", "admin", "watch", ...])
    wait_until(lambda: table_row(term.text, "weather"), ...)   # the last drawn row of a backend, as cells
    term.stop()                                                 # always; idempotent

`text` is everything written so far with escape sequences and carriage returns removed, so every redraw of
the table is in it, one after another: `table_row` and `last_title` read the newest.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import threading

from tests.support.procs import ROOT

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][AB0-2]|\r")


class Terminal:
    """A process on a pseudo-terminal (`columns` x `rows`) in its own session, its output collected by a thread."""

    def __init__(
        self, argv: list[str], *, columns: int = 160, rows: int = 50, env: dict[str, str] | None = None
    ) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        full_env = {
            **os.environ,
            "TERM": "xterm-256color",
            "COLUMNS": str(columns),
            "LINES": str(rows),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        full_env.pop("NO_COLOR", None)
        try:
            self.popen = subprocess.Popen(
                argv, stdin=slave, stdout=slave, stderr=slave, env=full_env, cwd=ROOT, start_new_session=True
            )
        except BaseException:
            os.close(master)
            raise
        finally:
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

    def exited(self) -> bool:
        """The process has exited and everything it wrote has been read."""
        return self.popen.poll() is not None and not self._reader.is_alive()

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
    """The last drawn row of backend `name` in a live status table, as cells (None: not drawn yet)."""
    rows = [line for line in text.splitlines() if line.startswith(f"│ {name} ")]
    return [cell.strip() for cell in rows[-1].strip("│ ").split("│")] if rows else None


def last_title(text: str) -> str | None:
    """The last drawn title line of a live status table (`xds-control · N backends · view V`)."""
    start = text.rfind(
        "xds-control · "
    )  # (with the escapes gone, a redraw's title may share a line with the last caption)
    return text[start:].split("\n", 1)[0].strip() if start >= 0 else None
