"""The process shell of `up`, with small real child processes (no Envoy, no MCP)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.support.procs import ROOT
from tests.support.waiting import async_wait_until, free_port, wait_until
from xds_control.errors import SupervisorError
from xds_control.runner.plan import ChildSpec, ExitDecision, HttpReady, LineReady, Role, TcpReady
from xds_control.runner.supervisor import ChildFailed, Supervisor

pytestmark = pytest.mark.integration


class RecordingReporter:
    """Collects what the supervisor reports, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lines: dict[str, list[str]] = {}
        self.decisions: dict[str, ExitDecision] = {}

    def note(self, message: str) -> None:
        self.events.append(("note", message))

    def starting(self, spec: ChildSpec, pid: int) -> None:
        self.events.append(("starting", spec.name))

    def ready(self, spec: ChildSpec, seconds: float) -> None:
        self.events.append(("ready", spec.name))

    def output(self, spec: ChildSpec, line: str) -> None:
        self.lines.setdefault(spec.name, []).append(line)

    def exited(self, spec: ChildSpec, decision: ExitDecision) -> None:
        self.events.append(("exited", spec.name))
        self.decisions[spec.name] = decision

    def stack_ready(self, lines: list[str]) -> None:
        self.events.append(("stack_ready", "\n".join(lines)))

    def failed(self, message: str) -> None:
        self.events.append(("failed", message))

    def stopping(self, reason: str) -> None:
        self.events.append(("stopping", reason))


def py(name: str, code: str, *ready, critical: bool = True, timeout: float = 15.0) -> ChildSpec:
    return ChildSpec(
        name=name, role=Role.BACKEND, argv=(sys.executable, "-u", "-c", textwrap.dedent(code)), ready=tuple(ready),
        critical=critical, start_timeout=timeout,
    )  # fmt: skip


SERVE_FOREVER = "import time\nwhile True: time.sleep(60)"


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); it is gone for our purposes once it is no longer running
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] == "Z"


async def test_a_ready_line_printed_before_anyone_waits_is_not_lost():
    reporter = RecordingReporter()
    async with Supervisor(reporter) as sup:
        child = await sup.start(py("early", f"print('READY now', flush=True)\n{SERVE_FOREVER}", LineReady("^READY")))
        await async_wait_until(lambda: reporter.lines.get("early"), what="the READY line to be read")
        await sup.wait_ready(child)
        assert child.ready and child.matched["^READY"] == "READY now"
    assert ("ready", "early") in reporter.events
    assert reporter.decisions["early"].message == "early stopped"


async def test_output_is_reported_line_by_line_under_the_child_name():
    reporter = RecordingReporter()
    async with Supervisor(reporter) as sup:
        child = await sup.start(py("talker", "print('one'); print('two', flush=True)"))
        await child.exited.wait()
    assert reporter.lines["talker"] == ["one", "two"]


async def test_tcp_and_http_readiness(tmp_path):
    port = free_port()
    reporter = RecordingReporter()
    code = f"import http.server, functools\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(tmp_path)!r})\nhttp.server.ThreadingHTTPServer(('127.0.0.1', {port}), h).serve_forever()"
    async with Supervisor(reporter) as sup:
        child = await sup.start(py("web", code, TcpReady("127.0.0.1", port), HttpReady(f"http://127.0.0.1:{port}/")))
        await sup.wait_ready(child)
        assert child.ready


async def test_http_readiness_waits_for_the_expected_status(tmp_path):
    port = free_port()
    reporter = RecordingReporter()
    code = f"import http.server, functools\nh = functools.partial(http.server.SimpleHTTPRequestHandler, directory={str(tmp_path)!r})\nhttp.server.ThreadingHTTPServer(('127.0.0.1', {port}), h).serve_forever()"
    async with Supervisor(reporter) as sup:
        child = await sup.start(py("web", code, HttpReady(f"http://127.0.0.1:{port}/missing"), timeout=1.0))
        with pytest.raises(
            ChildFailed, match=r"web was not ready within 1s \(waiting for GET http://127.0.0.1:\d+/missing -> 200\)"
        ):
            await sup.wait_ready(child)


async def test_a_child_exiting_before_ready_is_fatal_and_the_error_carries_its_last_output():
    reporter = RecordingReporter()
    async with Supervisor(reporter) as sup:
        child = await sup.start(
            py("broken", "import sys; print('address already in use'); sys.exit(3)", LineReady("^READY"))
        )
        await asyncio.wait_for(sup.fatal.wait(), 10)
        assert not child.ready
    error = sup.fatal_error
    assert isinstance(error, ChildFailed)
    assert str(error).startswith("broken exited with code 3 before it was ready")
    assert "address already in use" in str(error)


async def test_a_critical_child_dying_after_ready_is_fatal_a_noncritical_one_is_not():
    reporter = RecordingReporter()
    async with Supervisor(reporter) as sup:
        backend = await sup.start(
            py("backend", f"print('READY', flush=True)\n{SERVE_FOREVER}", LineReady("READY"), critical=False)
        )
        core = await sup.start(py("core", f"print('READY', flush=True)\n{SERVE_FOREVER}", LineReady("READY")))
        await sup.wait_ready(backend)
        await sup.wait_ready(core)
        os.kill(backend.pid, signal.SIGKILL)
        await backend.exited.wait()
        assert not sup.fatal.is_set()
        assert reporter.decisions["backend"].level == "warning"
        os.kill(core.pid, signal.SIGKILL)
        await asyncio.wait_for(sup.fatal.wait(), 10)
        assert str(sup.fatal_error).startswith("core was killed by SIGKILL; stopping the stack")


async def test_a_child_that_never_gets_ready_times_out():
    reporter = RecordingReporter()
    async with Supervisor(reporter) as sup:
        child = await sup.start(py("mute", SERVE_FOREVER, LineReady("READY"), timeout=0.5))
        with pytest.raises(
            ChildFailed, match=r"mute was not ready within 0.5s \(waiting for a line matching 'READY'\)"
        ):
            await sup.wait_ready(child)


async def test_stop_sends_sigterm_then_sigkill_to_children_that_ignore_it():
    reporter = RecordingReporter()
    stubborn = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('READY', flush=True)\nwhile True: time.sleep(60)"
    async with Supervisor(reporter, grace=0.5) as sup:
        polite = await sup.start(py("polite", f"print('READY', flush=True)\n{SERVE_FOREVER}", LineReady("READY")))
        rude = await sup.start(py("rude", stubborn, LineReady("READY")))
        for child in (polite, rude):
            await sup.wait_ready(child)
        started = time.monotonic()
    assert polite.returncode == -signal.SIGTERM
    assert rude.returncode == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert any(kind == "note" and "rude did not stop within 0.5s" in text for kind, text in reporter.events)
    assert reporter.decisions["rude"].message == "rude stopped"


async def test_grandchildren_in_the_childs_process_group_are_stopped_too():
    reporter = RecordingReporter()
    code = f"import subprocess, sys\np = subprocess.Popen([sys.executable, '-c', {SERVE_FOREVER!r}])\nprint('READY', p.pid, flush=True)\np.wait()"
    async with Supervisor(reporter) as sup:
        child = await sup.start(py("parent", code, LineReady("READY")))
        await sup.wait_ready(child)
        grandchild = int(child.matched["READY"].split()[1])
    wait_until(lambda: pid_gone(grandchild), timeout=10, what="the grandchild to be gone")


async def test_a_command_that_cannot_start_raises_a_supervisor_error():
    async with Supervisor(RecordingReporter()) as sup:
        spec = ChildSpec(name="ghost", role=Role.ENVOY, argv=("/nonexistent/envoy", "-c", "x"), ready=())
        with pytest.raises(SupervisorError, match="cannot start ghost: No such file or directory: /nonexistent/envoy"):
            await sup.start(spec)


def test_children_die_with_a_killed_supervisor_process():
    """PR_SET_PDEATHSIG: SIGKILL the process running the supervisor; its children go too."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from xds_control.runner.plan import ChildSpec, LineReady, Role
        from xds_control.runner.report import PlainReporter
        from xds_control.runner.supervisor import Supervisor

        async def main():
            async with Supervisor(PlainReporter()) as sup:
                spec = ChildSpec(name="kid", role=Role.BACKEND, argv=(sys.executable, "-c", {SERVE_FOREVER!r}), ready=())
                child = await sup.start(spec)
                print("CHILD", child.pid, flush=True)
                await asyncio.Event().wait()

        asyncio.run(main())
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert runner.stdout is not None
        line = runner.stdout.readline()
        assert line.startswith("CHILD "), line
        child_pid = int(line.split()[1])
        assert not pid_gone(child_pid)
        runner.kill()
        runner.wait(timeout=10)
        wait_until(lambda: pid_gone(child_pid), timeout=10, what="the child to die with its parent")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
