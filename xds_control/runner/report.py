"""How `xds-control up` tells the user what is happening.

`Reporter` is the seam: the supervisor and `run_up` only call its methods.

* `PlainReporter` (`--quiet`, `--log-format json`, or stdout is not a terminal): log lines on
  stderr, each child's output prefixed with the child's name (in JSON mode,
  each child line becomes a JSON object with a `child` field), the endpoint
  lines on stdout, and one log line per backend whose status changed, from the
  control plane's admin Watch stream.
* `LiveReporter` (stdout is a terminal): the same, plus a live table of the
  backends (`admin.live`) redrawn on every view change, with the log lines
  scrolling above it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from typing import Protocol, TextIO

from xds_control.admin.render import changed, endpoints, tools
from xds_control.runner.plan import ChildSpec, ExitDecision
from xds_control.telemetry.logs import json_logging
from xds_control.view import BackendStatus

log = logging.getLogger("xds_control.runner")


class Reporter(Protocol):
    def note(self, message: str) -> None: ...
    def starting(self, spec: ChildSpec, pid: int) -> None: ...
    def ready(self, spec: ChildSpec, seconds: float) -> None: ...
    def output(self, spec: ChildSpec, line: str) -> None: ...
    def exited(self, spec: ChildSpec, decision: ExitDecision) -> None: ...
    def stack_ready(self, lines: list[str]) -> None: ...
    def failed(self, message: str) -> None: ...
    def stopping(self, reason: str) -> None: ...
    def backends(self, version: int, backends: Mapping[str, BackendStatus]) -> None: ...
    def close(self) -> None: ...


class PlainReporter:
    """Plain log lines; the endpoint lines go to stdout so scripts can read them."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.width = 13
        self._view: Mapping[str, BackendStatus] | None = None

    def note(self, message: str) -> None:
        log.info(message)

    def starting(self, spec: ChildSpec, pid: int) -> None:
        self.width = max(self.width, len(spec.name))
        log.info("started %s (pid %d): %s", spec.name, pid, " ".join(spec.argv))

    def ready(self, spec: ChildSpec, seconds: float) -> None:
        log.info("%s is ready (%.1fs)", spec.name, seconds)

    def output(self, spec: ChildSpec, line: str) -> None:
        print(child_line(spec.name, line, self.width, as_json=json_logging()), file=self.err, flush=True)

    def exited(self, spec: ChildSpec, decision: ExitDecision) -> None:
        log.log(logging.getLevelName(decision.level.upper()), decision.message)

    def stack_ready(self, lines: list[str]) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    def failed(self, message: str) -> None:
        if json_logging():
            log.error(message)
        else:
            print(f"error: {message}", file=self.err, flush=True)

    def stopping(self, reason: str) -> None:
        log.info("stopping (%s)", reason)

    def backends(self, version: int, backends: Mapping[str, BackendStatus]) -> None:
        """One line per backend that appeared, changed (state, breaker, routing, error, tools, endpoints) or went."""
        now_changed, removed = changed(self._view, backends)
        self._view = dict(backends)
        for b in now_changed:
            fields = {
                "event": "backend_status",
                "backend": b.name,
                "state": str(b.state),
                "breaker": str(b.breaker),
                "routable": b.routable,
                "last_error": b.last_error,
                "tools": tools(b),
                "endpoints": endpoints(b),
                "view_version": version,
            }
            log.info(status_message(b), extra=fields)
        for name in removed:
            log.info(
                "backend %s: removed",
                name,
                extra={"event": "backend_status", "backend": name, "state": "removed", "view_version": version},
            )

    def close(self) -> None:
        pass


def status_message(b: BackendStatus) -> str:
    """`backend weather: unhealthy (breaker open, not routable, last error connection_refused, 3 tools, endpoints 0/1 up)`."""
    parts = [f"breaker {b.breaker}", "routable" if b.routable else "not routable"]
    parts += ["drained"] if b.drained else []
    parts += [f"last error {b.last_error}"] if b.last_error else []
    parts += [f"{tools(b)} tools", f"endpoints {endpoints(b)}"]
    return f"backend {b.name}: {b.state} ({', '.join(parts)})"


def child_line(name: str, line: str, width: int, *, as_json: bool) -> str:
    """A child's output line as `up` prints it: `name | line`, or in JSON mode one JSON object
    (the child's own JSON log line with `child` added, or `{"child", "msg"}` around plain text)."""
    if not as_json:
        return f"{name:<{width}} | {line}"
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        entry = {"msg": line}
    return json.dumps({"child": name, **entry})


class LiveReporter(PlainReporter):
    """`PlainReporter` with a live backend table once the first view arrives (stdout is a terminal)."""

    def __init__(self) -> None:
        super().__init__()
        from xds_control.admin.live import LiveStatus  # rich is only needed here

        self.live = LiveStatus()
        self._real = (self.out, self.err)

    def _follow_live_streams(self) -> None:
        # While the table is live, sys.stdout/stderr are its proxies: print through them.
        self.out, self.err = (sys.stdout, sys.stderr) if self.live.started else self._real

    def stack_ready(self, lines: list[str]) -> None:
        self.live.endpoint = lines[0].split(": ", 1)[-1] if lines else None
        super().stack_ready(lines)
        if self.live.started:
            self.live.refresh()

    def backends(self, version: int, backends: Mapping[str, BackendStatus]) -> None:
        if not self.live.started:
            self.live.start()
            self._follow_live_streams()
        self.live.update(version, backends)

    def failed(self, message: str) -> None:
        self.close()
        super().failed(message)

    def stopping(self, reason: str) -> None:
        self.live.note = f"stopping ({reason})"
        super().stopping(reason)
        if self.live.started:
            self.live.refresh()

    def close(self) -> None:
        self.live.stop()
        self._follow_live_streams()


def make_reporter(quiet: bool, *, interactive: bool | None = None) -> Reporter:
    """`--quiet`, stdout not a terminal, or `--log-format json` (lines for a machine): plain lines;
    otherwise the live status table."""
    if interactive is None:
        interactive = sys.stdout.isatty()
    return PlainReporter() if quiet or not interactive or json_logging() else LiveReporter()
