"""The aggregator's core: the current merged catalog, list answers with the failure mode, and call routing.

`Gateway.apply_view` swaps in a new `MergedCatalog` (catalog.py) for each view;
list requests are pages of it (pagination.py) with the failure mode applied:

* ``fail``: an error naming the unavailable backends when a `required` one is
  not routable, or when none is routable (with no backend configured at all
  there is nothing to be unavailable: the lists are simply empty);
* ``best_effort``: never an error.

In both modes unroutable backends are left out and, whenever any is,
named in the result's ``_meta["xds-control/unavailable"]`` as
``[{"backend", "state", "retry_after"}, ...]``.

Calls (tools/call, resources/read, prompts/get, completion/complete) are
routed by exposed name or URI to the owning backend's `BackendUpstream`. A
name that belongs to an unroutable backend fails at once with
BACKEND_UNAVAILABLE and no network I/O; an unknown name is INVALID_PARAMS (a
resource: -32002, as MCP servers answer); tool arguments are checked against
the tool's input schema before anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import find_invalid_x_mcp_header, mcp_param_headers, x_mcp_header_map
from opentelemetry.trace import Span

from xds_control.aggregator import access, metrics
from xds_control.aggregator.access import ANONYMOUS, Access, Principal
from xds_control.aggregator.arguments import checkable, checker
from xds_control.aggregator.backchannel import Backchannel
from xds_control.aggregator.catalog import (
    KINDS,
    Kind,
    MergedCatalog,
    MergeKey,
    empty_catalog,
    manual_conflict_issues,
    merge_catalog,
    merge_key,
    with_states,
)
from xds_control.aggregator.outcomes import OutcomeBatcher
from xds_control.aggregator.pagination import PAGE_SIZE, CursorError, page
from xds_control.aggregator.relay import Caller, LoggingLevel
from xds_control.aggregator.rpc_errors import OK, caller_error, from_unavailable, list_unavailable
from xds_control.aggregator.tracing import call_span, finish
from xds_control.aggregator.upstream import BackendUpstream, ProgressFn, Spawn, UpstreamUrl, clean_params
from xds_control.config import Config
from xds_control.errors import BackendError, CallerError, ConfigError

log = logging.getLogger(__name__)

UNAVAILABLE_META = "xds-control/unavailable"
RESOURCE_NOT_FOUND = -32002
RESULT_KEY: Mapping[Kind, str] = {
    "tools": "tools",
    "resources": "resources",
    "resource_templates": "resourceTemplates",
    "prompts": "prompts",
}
_WHAT: Mapping[Kind, str] = {
    "tools": "tool",
    "prompts": "prompt",
    "resources": "resource",
    "resource_templates": "resource template",
}


class Gateway:
    def __init__(
        self,
        config: Config,
        upstream_url: UpstreamUrl,
        spawn: Spawn,
        *,
        page_size: int = PAGE_SIZE,
        outcomes: OutcomeBatcher | None = None,
        max_upstream_sessions: int = 512,
        upstream_idle_timeout: float = 300.0,
        backchannel: Backchannel | None = None,
    ) -> None:
        self.config = config
        self.backchannel = backchannel
        self.access = Access(config)
        self.page_size = page_size
        self.outcomes = outcomes or OutcomeBatcher()
        self.catalog: MergedCatalog = empty_catalog(config)
        self._merge_key: MergeKey | None = None
        self.view_version = 0
        self.upstreams = {
            b.name: BackendUpstream(
                b,
                upstream_url(b),
                spawn,
                call_timeout=config.aggregator.call_timeout,
                max_sessions=max_upstream_sessions,
                idle_timeout=upstream_idle_timeout,
                backchannel=backchannel,
            )
            for b in config.backends
        }
        self._validators: dict[str, Any] = {}
        self._header_maps: dict[str, dict[tuple[str, ...], str]] = {}
        self._tools_by_name: dict[str, Mapping[str, Any]] = {}
        self._reported_conflicts: frozenset[Any] = frozenset()
        self._publish_sizes()

    # -- the view -------------------------------------------------------------------------------

    def apply_view(self, version: int, backends: Mapping[str, Any]) -> MergedCatalog:
        """Swap in the merged catalog of this view. The merge is skipped when no backend's routability or
        catalog hash changed (catalog.merge_key): then only the unavailable backends' states are refreshed.
        The first view with manual-mode name conflicts is a config error."""
        key = merge_key(self.config, backends)
        if key is not None and key == self._merge_key:
            self._update_upstreams(backends)
            self.catalog = with_states(self.catalog, self.config, backends)
            self.view_version = version
            return self.catalog
        catalog = merge_catalog(self.config, backends)
        issues = manual_conflict_issues(self.config, catalog.conflicts)
        if issues and self.view_version == 0:
            raise ConfigError(issues, source="aggregator.conflict_resolution: manual")
        self._update_upstreams(backends)
        self._report_conflicts(catalog)
        self.catalog = catalog
        self._merge_key = key
        self.view_version = version
        self._validators, self._header_maps, self._tools_by_name = {}, {}, {}
        self._publish_sizes()
        return catalog

    def _update_upstreams(self, backends: Mapping[str, Any]) -> None:
        for name, upstream in self.upstreams.items():
            upstream.update(backends.get(name))

    def _report_conflicts(self, catalog: MergedCatalog) -> None:
        current = frozenset(catalog.conflicts)
        for conflict in current - self._reported_conflicts:
            log.error(
                "name conflict in the merged catalog",
                extra={
                    "kind": conflict.kind,
                    "exposed_name": conflict.name,
                    "backends": ",".join(conflict.backends),
                    "left_out": ",".join(conflict.rejected),
                },
            )
        self._reported_conflicts = current

    def _publish_sizes(self) -> None:
        for kind in KINDS:
            metrics.CATALOG_ITEMS.labels(kind=kind).set(len(self.catalog.lists[kind].items))
            metrics.CATALOG_CONFLICTS.labels(kind=kind).set(sum(1 for c in self.catalog.conflicts if c.kind == kind))

    # -- lists ----------------------------------------------------------------------------------

    def list_page(
        self, kind: Kind, cursor: str | None, *, catalog: MergedCatalog | None = None, principal: Principal = ANONYMOUS
    ) -> dict[str, Any]:
        """One page of a merged list (of `catalog`, default the current one) with the failure mode applied, as
        `principal`'s grant sees it."""
        catalog = catalog or self.catalog
        if self.config.aggregator.failure_mode == "fail" and catalog.configured:
            required = [u for u in catalog.unavailable if u.required]
            if required:
                raise list_unavailable(kind, required, reason="required backend unavailable")
            if catalog.routable == 0:
                raise list_unavailable(kind, catalog.unavailable, reason="no backend is routable")
        try:
            items, next_cursor = page(self.access.visible(catalog, kind, principal.grant), cursor, self.page_size)
        except CursorError as exc:
            raise caller_error(
                "bad_cursor", types.INVALID_PARAMS, str(exc), {"cursor": cursor, "reason": exc.reason}
            ) from None
        result: dict[str, Any] = {RESULT_KEY[kind]: list(items), "resultType": "complete"}
        if next_cursor is not None:
            result["nextCursor"] = next_cursor
        if catalog.unavailable:
            result["_meta"] = {UNAVAILABLE_META: [u.to_json() for u in catalog.unavailable]}
        return result

    # -- calls ----------------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        kind: Kind,
        key: str,
        params: Mapping[str, Any],
        *,
        client_key: str | None,
        progress: ProgressFn | None = None,
        arguments: Mapping[str, Any] | None = None,
        backend_params: Callable[[str], dict[str, Any]] | None = None,
        trace_context: Mapping[str, str] | None = None,
        caller: Caller | None = None,
        principal: Principal = ANONYMOUS,
    ) -> dict[str, Any]:
        """Route one request; `params` is the client's, as wire JSON. `backend_params(original)`, if given, builds
        what the backend gets instead of `params` with its name or URI replaced. `trace_context`: the client's
        `traceparent`/`tracestate` to forward as they came (when this process exports no spans of its own).
        A name `principal`'s grant does not cover is refused exactly as an unknown one."""
        started = time.perf_counter()
        denied = not principal.grant.allows(kind, key)
        with call_span(method, kind, key) as span:
            outcome, category = "cancelled", None
            try:
                if denied:
                    access.DENIED.labels(kind=kind, rules=principal.grant.rule_label).inc()
                    raise self._unknown(kind, key)
                result = await self._route(
                    method, kind, key, params, span, client_key, progress, arguments, backend_params, trace_context,
                    caller,
                )  # fmt: skip
                outcome = "tool_error" if result.get("isError") is True else OK
                return result
            except BackendError as exc:
                outcome, category = exc.outcome, (exc.data or {}).get("category") or (exc.data or {}).get("state")
                raise
            except CallerError as exc:
                outcome = exc.outcome
                raise
            except MCPError:
                outcome = "error"  # the backend's own JSON-RPC error: it answered
                raise
            finally:
                finish(span, outcome, category)
                if principal is not ANONYMOUS:
                    route = None if denied else self.catalog.route(kind, key)
                    access.audit(
                        principal, method, key, route.backend if route else None, "denied" if denied else outcome,
                        time.perf_counter() - started,
                    )  # fmt: skip

    async def _route(
        self,
        method: str,
        kind: Kind,
        key: str,
        params: Mapping[str, Any],
        span: Span,
        client_key: str | None,
        progress: ProgressFn | None,
        arguments: Mapping[str, Any] | None,
        backend_params: Callable[[str], dict[str, Any]] | None,
        trace_context: Mapping[str, str] | None,
        caller: Caller | None = None,
    ) -> dict[str, Any]:
        catalog = self.catalog
        route = catalog.route(kind, key)
        label = key if kind in ("tools", "prompts") else ""
        if route is None:
            owner = catalog.unavailable_owner(kind, key)
            if owner is not None:
                span.set_attribute("backend", owner.backend)
                metrics.FAST_FAILED.labels(backend=owner.backend, state=owner.state).inc()
                metrics.CALLS.labels(backend=owner.backend, method=method, tool=label, outcome="unavailable").inc()
                raise from_unavailable(owner)
            raise self._unknown(kind, key)
        span.set_attributes({"backend": route.backend, "original": route.original})
        if kind == "tools":
            self._check_arguments(key, arguments)
        upstream = self.upstreams[route.backend]
        label = route.original if label else ""
        outcome, category = "cancelled", None
        started = time.perf_counter()
        try:
            result = await upstream.request(
                method,
                backend_params(route.original)
                if backend_params
                else clean_params(params, route.original, trace_context=trace_context),
                client_key=client_key,
                progress=progress,
                param_headers=self._param_headers(key, arguments) if kind == "tools" else None,
                caller=caller,
            )
            outcome = "tool_error" if result.get("isError") is True else OK
            return result
        except BackendError as exc:
            outcome, category = exc.outcome, (exc.data or {}).get("category")
            raise
        except MCPError:
            outcome = "error"  # the backend's own JSON-RPC error: it answered
            raise
        finally:
            metrics.CALLS.labels(backend=route.backend, method=method, tool=label, outcome=outcome).inc()
            if outcome != "cancelled":
                metrics.CALL_LATENCY.labels(backend=route.backend, method=method).observe(time.perf_counter() - started)
            self.outcomes.record(route.backend, OK if outcome in ("tool_error", "error") else outcome, category)

    @staticmethod
    def _unknown(kind: Kind, key: str) -> CallerError:
        if kind == "resources":
            return caller_error("not_found", RESOURCE_NOT_FOUND, "Resource not found", {"uri": key})
        return caller_error("unknown_name", types.INVALID_PARAMS, f"Unknown {_WHAT[kind]}: {key}", {_WHAT[kind]: key})

    def _check_arguments(self, tool: str, arguments: Mapping[str, Any] | None) -> None:
        if tool not in self._validators:
            self._validators[tool] = self._validator(tool)
        validator = self._validators[tool]
        if validator is None or not checkable(arguments):
            return
        errors = sorted(validator.iter_errors(dict(arguments or {})), key=lambda e: list(e.absolute_path))
        if errors:
            shown = [{"path": "/".join(str(p) for p in e.absolute_path), "message": e.message} for e in errors[:5]]
            message = f"Invalid arguments for tool {tool!r}: {errors[0].message}"
            raise caller_error("invalid_arguments", types.INVALID_PARAMS, message, {"tool": tool, "errors": shown})

    def _param_headers(self, tool: str, arguments: Mapping[str, Any] | None) -> dict[str, str] | None:
        """The `Mcp-Param-*` headers a 2026-07-28 backend requires for this call: arguments its tool's
        inputSchema annotates with `x-mcp-header`, mirrored the way the SDK client does (none for a schema
        whose annotations are invalid: the SDK does not honour those either)."""
        header_map = self._header_maps.get(tool)
        if header_map is None:
            schema = self._schema(tool)
            valid = schema is not None and find_invalid_x_mcp_header(schema) is None
            header_map = self._header_maps[tool] = x_mcp_header_map(schema) if valid else {}
        return mcp_param_headers(header_map, arguments or {}) if header_map else None

    def tool_schema(self, tool: str) -> Mapping[str, Any] | None:
        """The exposed tool's inputSchema (None when unknown, or when the current principal may not use it)."""
        if not access.CURRENT_PRINCIPAL.get().grant.allows("tools", tool):
            return None
        return self._schema(tool)

    def _schema(self, tool: str) -> Mapping[str, Any] | None:
        if not self._tools_by_name:
            self._tools_by_name = {item["name"]: item for item in self.catalog.lists["tools"].items}
        schema = self._tools_by_name.get(tool, {}).get("inputSchema")
        return schema if isinstance(schema, Mapping) else None

    def _validator(self, tool: str) -> Any:
        """A validator for the tool's inputSchema (arguments.py: linear time), or None when it is not checked here."""
        schema = self._schema(tool)
        return checker(schema, tool) if schema is not None else None

    # -- lifecycle ------------------------------------------------------------------------------

    def client_session_closed(self, session_id: str) -> None:
        for upstream in self.upstreams.values():
            upstream.close_client(session_id)
        if self.backchannel is not None:
            self.backchannel.forget(session_id)

    async def roots_changed(self, client_key: str) -> None:
        """`notifications/roots/list_changed` of a client session, to each of its backend sessions."""
        await asyncio.gather(*(u.roots_changed(client_key) for u in self.upstreams.values()), return_exceptions=True)

    async def set_log_level(self, client_key: str, level: LoggingLevel) -> None:
        """`logging/setLevel` of a client session: kept for its backend sessions to come, sent to the open ones."""
        if self.backchannel is None:
            return
        self.backchannel.set_level(client_key, level)
        await asyncio.gather(
            *(u.set_log_level(client_key, level) for u in self.upstreams.values()), return_exceptions=True
        )

    def sweep(self) -> None:
        for upstream in self.upstreams.values():
            upstream.sweep()

    async def aclose(self) -> None:
        await asyncio.gather(*(u.aclose() for u in self.upstreams.values()), return_exceptions=True)
