"""How `xds-control up` tells the user what is happening.

`Reporter` is the seam: the supervisor and `run_up` only call its methods.
`PlainReporter` writes log lines (and each child's output, prefixed with the
child's name) to stderr and the endpoint lines to stdout. A live status table
(`up` without `--quiet`) is another implementation of the same protocol.
"""

from __future__ import annotations

import logging
import sys
from typing import Protocol, TextIO

from xds_control.runner.plan import ChildSpec, ExitDecision

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


class PlainReporter:
    """Plain log lines; the endpoint lines go to stdout so scripts can read them."""

    def __init__(self, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.width = 13

    def note(self, message: str) -> None:
        log.info(message)

    def starting(self, spec: ChildSpec, pid: int) -> None:
        self.width = max(self.width, len(spec.name))
        log.info("started %s (pid %d): %s", spec.name, pid, " ".join(spec.argv))

    def ready(self, spec: ChildSpec, seconds: float) -> None:
        log.info("%s is ready (%.1fs)", spec.name, seconds)

    def output(self, spec: ChildSpec, line: str) -> None:
        print(f"{spec.name:<{self.width}} | {line}", file=self.err, flush=True)

    def exited(self, spec: ChildSpec, decision: ExitDecision) -> None:
        log.log(logging.getLevelName(decision.level.upper()), decision.message)

    def stack_ready(self, lines: list[str]) -> None:
        for line in lines:
            print(line, file=self.out, flush=True)

    def failed(self, message: str) -> None:
        print(f"error: {message}", file=self.err, flush=True)

    def stopping(self, reason: str) -> None:
        log.info("stopping (%s)", reason)


def make_reporter(quiet: bool) -> Reporter:
    """`--quiet`: plain logs. The live status table is not built yet, so both are plain for now."""
    return PlainReporter()
