"""Real child processes for integration tests: started, waited on, and always killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Proc:
    """A child process whose output is collected in a background thread, so tests can wait for lines.

    With `log_file` the output goes to that file instead and is read only when asked for (`output`,
    `wait_for_line`): a benchmark's own process then spends nothing on a child that writes a line per request."""

    def __init__(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        name: str = "",
        log_file: Path | None = None,
    ) -> None:
        self.argv = argv
        self.name = name or Path(argv[0]).name
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **(env or {})}
        self._log = None if log_file is None else open(log_file, "wb+")  # noqa: SIM115  # closed in stop()
        self._log_read = b""  # the file's last line while it has no newline yet
        self._log_at = 0  # bytes of the file read so far
        self.popen = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE if self._log is None else self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=str(cwd or ROOT),
            start_new_session=True,
        )
        self.lines: deque[str] = deque(maxlen=5000)
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None
        if self._log is None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()

    def _tail(self) -> None:
        """With a log file: the lines written since the last call."""
        if self._log is None or self._log.closed:
            return
        with self._cond:
            while chunk := os.pread(self._log.fileno(), 1 << 20, self._log_at):
                self._log_at += len(chunk)
                *complete, self._log_read = (self._log_read + chunk).split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)

    def _reading(self) -> bool:
        return self._reader is not None and self._reader.is_alive()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        self._tail()
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, needle: str, timeout: float = 15.0) -> str:
        """Block until a line containing `needle` appears; fail if the process dies or time runs out."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            self._tail()
            with self._cond:
                lines = list(self.lines)
                for line in lines[seen:]:
                    if needle in line:
                        return line
                seen = len(lines)
                if self.popen.poll() is not None and not self._reading():
                    raise AssertionError(
                        f"{self.name} exited with {self.popen.returncode} before printing {needle!r}:\n{self.output[-3000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{self.name} did not print {needle!r} within {timeout}s:\n{self.output[-3000:]}"
                    )
                self._cond.wait(min(remaining, 0.2))

    def alive(self) -> bool:
        return self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.popen.pid, sig)

    def stacks(self, timeout: float = 10.0) -> str:
        """For a child that hangs: SIGABRT makes a Python child's faulthandler print every thread's stack
        (PYTHONFAULTHANDLER is set for children); returns the output it left."""
        if self.alive():
            os.kill(self.popen.pid, signal.SIGABRT)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            if self._reader is not None:
                self._reader.join(timeout=2)
        return self.output[-6000:]

    def kill(self) -> None:
        """SIGKILL the whole process group (a crash, not a shutdown)."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit within `timeout`."""
        if self.alive():
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self.popen.stdout is not None and not self._reading():
            self.popen.stdout.close()
        if self._log is not None:
            self._tail()
            self._log.close()
        return self.popen.returncode

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def python_module(module: str, *args: str, env: dict[str, str] | None = None, name: str = "") -> Proc:
    return Proc([sys.executable, "-m", module, *args], env=env, name=name or module)


def demo_backend(name: str, port: int, *args: str, env: dict[str, str] | None = None) -> Proc:
    """Start `examples/backends/demo_server.py` and wait for its READY line."""
    proc = python_module(
        "examples.backends.demo_server", "--name", name, "--port", str(port), *args, env=env, name=f"backend-{name}"
    )
    try:
        proc.wait_for_line("READY", timeout=20)
    except BaseException:
        proc.stop()
        raise
    return proc


def unwind_on_sigterm() -> None:
    """SIGTERM (`timeout`, `kill`) unwinds like Ctrl-C, through the `finally` blocks that stop every child:
    a benchmark killed from outside leaves no control plane, Envoy or backend behind."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of `pid` so far (fields 14 and 15 of proc(5), after "(comm)")."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
