"""The one exception tree of xds-control.

    XdsControlError
    ├── ConfigError                 a config file or value is invalid (names the field path)
    ├── XdsError                    the xDS layer
    │   └── SnapshotInconsistent    a snapshot references resources it does not contain
    ├── ProbeError                  a backend probe failed; carries a sanitized ``category``
    ├── WireError                   an HTTP answer broke its format or a size bound; carries a ``category``
    ├── AdminError                  the admin API refused or failed a call
    │   ├── Unauthorized            a mutating admin call without a valid token
    │   ├── AdminUnavailable        the admin API could not be reached (refused, timed out, shut down)
    │   └── BackendNotFound         the named backend is not configured on the control plane
    ├── BackendUnavailable          a call reached an unroutable backend (aggregator fail-fast)
    └── SupervisorError             `xds-control up` could not start or keep a child running

Lower-layer errors (httpx2, grpc, the MCP SDK, OS errors) are mapped to the most
specific class at the boundary where they are caught; nothing above the
boundary sees a foreign exception type.
"""

from __future__ import annotations

from dataclasses import dataclass

from xds_control.sanitize import preview, redact_urls, value_preview


class XdsControlError(Exception):
    """Base of every error xds-control raises on purpose."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config: where (a dotted path such as ``backends.1.url``), what, and the bad value."""

    path: str
    message: str
    value: object = None

    def __str__(self) -> str:
        # Never the value itself: a short escaped preview, no URL credentials, no container expanded.
        shown = "" if self.value is None else f" (got {value_preview(self.value)})"
        return f"{preview(self.path or '<root>', 120)}: {preview(redact_urls(self.message), 400)}{shown}"


class ConfigError(XdsControlError):
    """A config file or value is invalid. ``issues`` lists every problem found, each with its field path."""

    def __init__(self, issues: list[ConfigIssue] | ConfigIssue | str, *, source: str | None = None) -> None:
        if isinstance(issues, str):
            issues = [ConfigIssue("", issues)]
        elif isinstance(issues, ConfigIssue):
            issues = [issues]
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        head = f"invalid config{f' {source}' if source else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {i}" for i in self.issues))


class XdsError(XdsControlError):
    """The xDS layer failed."""


class SnapshotInconsistent(XdsError):
    """A snapshot references a resource (EDS cluster, RDS route config) it does not contain."""


class ProbeError(XdsControlError):
    """A probe failed. ``category`` is a sanitized error category; the message never carries credentials."""

    def __init__(
        self, category: str, detail: str = "", *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.category = category
        self.detail = detail
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{category}: {detail}" if detail else category)


class WireError(XdsControlError):
    """An HTTP answer broke its wire format or a size bound (``xds_control.http11``, ``xds_control.sse``).

    ``category`` is ``protocol_error`` or ``response_too_large``; ``detail`` is fixed text, never the peer's."""

    def __init__(self, category: str, detail: str) -> None:
        self.category = category
        self.detail = detail
        super().__init__(f"{category}: {detail}")


class AdminError(XdsControlError):
    """The admin API refused or failed a call."""


class Unauthorized(AdminError):
    """A mutating admin call arrived without a valid token."""


class AdminUnavailable(AdminError):
    """The admin API could not be reached (refused, timed out, shut down)."""


class BackendNotFound(AdminError):
    """The named backend is not configured on the control plane."""


class BackendUnavailable(XdsControlError):
    """A call reached a backend that is not routable."""

    def __init__(self, backend: str, state: str, retry_after: float | None = None) -> None:
        self.backend = backend
        self.state = state
        self.retry_after = retry_after
        super().__init__(f"backend {backend!r} is unavailable (state: {state})")


class SupervisorError(XdsControlError):
    """A child process of `xds-control up` failed to start or died."""
