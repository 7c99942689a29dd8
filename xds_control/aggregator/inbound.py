"""Which requests the endpoint answers itself and which it hands to the MCP SDK. Pure.

`classify(scope, body, rules)` looks at one HTTP request to `/mcp` (the ASGI
scope and the whole body) and returns a `Verdict`: a `Plain` request the
endpoint answers here, or none (the SDK answers), plus the facts the session
table needs whichever answers. It never raises, whatever the bytes.

A request is `Plain` only when the SDK would pass every check it makes
before its handler runs, so an answer here is the answer the SDK gives:

* POST; the transport checks pass (Content-Type, Host, Origin: `host_allowed`
  mirrors the SDK's DNS-rebinding rule, tests/aggregator/test_inbound.py holds
  the two together), Accept names JSON and SSE, no routing header repeated;
* the body is one JSON-RPC request object (`jsonrpc`, `id` a string or a
  non-boolean integer, `method`, `params` an object, nothing else) for
  `tools/call` (params only `name` a string, `arguments` an object or absent,
  `_meta`) or a list method (params only `cursor` a string or absent,
  `_meta`), with no `progressToken` (progress needs the SDK's event stream);
* 2026-07-28 (`MCP-Protocol-Version` a modern version, no `Mcp-Session-Id`):
  `_meta` is there and the SDK's inbound ladder accepts it (envelope,
  header/body agreement, supported version); a list's params pass the SDK's
  own check; a call's `Mcp-Param-*` headers agree with its arguments;
* legacy (an `Mcp-Session-Id`, `MCP-Protocol-Version` a handshake version or
  absent, no authenticated `user` in the scope): `_meta` optional. Whether the
  session is one the server issued and initialized is the endpoint's check.

Everything else (`initialize`, notifications, batches, `subscriptions/listen`,
prompts, resources, requests with progress, GET, DELETE) goes to the SDK.
Later rules plug in here: which requests are answered where (a request that
may get server-to-client messages goes to the SDK), and who asks (an
authenticated principal, read from the scope in one place).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import Headers

from xds_control.aggregator import sdk_compat

LIST_METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
_CALL_KEYS = frozenset({"name", "arguments", "_meta"})
_LIST_KEYS = frozenset({"cursor", "_meta"})
_ENVELOPE_KEYS = frozenset({"jsonrpc", "id", "method", "params"})
# Messages that do not end a session's opening phase: the handshake itself and keep-alives.
_OPENING_METHODS = frozenset({"initialize", "ping"})

RequestId = int | str


@dataclass(frozen=True, slots=True)
class Rules:
    """What classifying depends on besides the request: the `Host`/`Origin` values `/mcp` accepts (as the
    SDK's transport settings list them) and each exposed tool's inputSchema (for `Mcp-Param-*` headers)."""

    allowed_hosts: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    tool_schema: Callable[[str], Mapping[str, Any] | None] = lambda name: None


@dataclass(frozen=True, slots=True)
class Plain:
    """A request answered here: `tools/call` (`name` its tool) or a list method."""

    id: RequestId
    method: str
    params: dict[str, Any]
    version: str  # the MCP-Protocol-Version header ("" when absent)
    session_id: str | None  # legacy: the session it belongs to

    @property
    def name(self) -> str:
        return str(self.params.get("name", ""))

    @property
    def modern(self) -> bool:
        return self.session_id is None


@dataclass(frozen=True, slots=True)
class Verdict:
    plain: Plain | None = None  # answer here; None: hand to the SDK
    session_id: str | None = None  # the `Mcp-Session-Id` header
    opens: bool = False  # a legacy `initialize` without a session: admission first
    settles: bool = False  # a message that ends a session's opening phase
    cancels: tuple[RequestId, ...] = field(default=())  # ids named by `notifications/cancelled` in the body
    json_answer: bool = False  # legacy: one request nothing but its answer can follow (the SDK's JSON mode)
    answers_back: bool = False  # an `initialize` declaring sampling, elicitation or roots (relay.py)


def host_allowed(rules: Rules, host: str | None, origin: str | None, content_type: str | None) -> bool:
    """The SDK's transport check for a POST (`TransportSecurityMiddleware.validate_request`), DNS-rebinding
    protection on: a JSON Content-Type, a listed Host (or `name:*`), no Origin or a listed one."""
    if content_type is None or not content_type.lower().startswith("application/json"):
        return False
    return _listed(host, rules.allowed_hosts) and (not origin or _listed(origin, rules.allowed_origins))


def _listed(value: str | None, allowed: tuple[str, ...]) -> bool:
    if not value:
        return False
    if value in allowed:
        return True
    return any(entry.endswith(":*") and value.startswith(entry[:-2] + ":") for entry in allowed)


def classify(scope: Mapping[str, Any], body: bytes, rules: Rules) -> Verdict:
    """See the module docstring. `scope`: an ASGI HTTP scope; `body`: the whole request body."""
    raw_headers = scope.get("headers") or ()
    headers = Headers(raw=list(raw_headers))
    session_id = headers.get("mcp-session-id") or None
    version = headers.get("mcp-protocol-version", "")
    modern = version in sdk_compat.MODERN_VERSIONS
    if scope.get("method") != "POST":
        return Verdict(session_id=session_id, settles=True)
    message = _decoded(body)
    methods = _methods_of(message)
    legacy_session = session_id is not None and not (version and version not in sdk_compat.HANDSHAKE_VERSIONS)
    return Verdict(
        plain=_plain(scope, headers, message, version, session_id, rules, modern=modern, legacy=legacy_session),
        session_id=session_id,
        opens=(opens := session_id is None and not modern and _is_request(message, "initialize")),
        settles=any(m not in _OPENING_METHODS for m in methods),
        cancels=_cancelled_ids(message) if legacy_session else (),
        json_answer=legacy_session and _answered_alone(message, headers),
        answers_back=opens and _answers_back(message),
    )


def _answers_back(message: Any) -> bool:
    """An `initialize` whose client declares it answers server-to-client requests: its calls need the SDK's
    event stream, where a backend's requests can precede the answer."""
    params = message.get("params")
    capabilities = params.get("capabilities") if isinstance(params, dict) else None
    return isinstance(capabilities, dict) and any(
        isinstance(capabilities.get(k), dict) for k in ("sampling", "elicitation", "roots")
    )


def _is_request(message: Any, method: str) -> bool:
    return isinstance(message, dict) and message.get("method") == method and "id" in message


def _decoded(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _methods_of(message: Any) -> list[str]:
    items = message if isinstance(message, list) else [message]
    return [m["method"] if isinstance(m.get("method"), str) else "" for m in items if isinstance(m, dict)]


def _cancelled_ids(message: Any) -> tuple[RequestId, ...]:
    """The request ids of the `notifications/cancelled` in a body (alone or in a batch), as the SDK reads them."""
    items = message if isinstance(message, list) else [message]
    found: list[RequestId] = []
    for item in items:
        if not isinstance(item, dict) or item.get("method") != "notifications/cancelled" or "id" in item:
            continue
        params = item.get("params")
        request_id = sdk_compat.cancelled_request_id(params if isinstance(params, dict) else None)
        if request_id is not None:
            found.append(sdk_compat.request_key(request_id))
    return tuple(found)


def _answered_alone(message: Any, headers: Headers) -> bool:
    """One JSON-RPC request (not a batch, not a notification) without a progress token, from a client that
    accepts JSON: its answer is the only message that can follow it."""
    if "application/json" not in headers.get("accept", ""):
        return False
    if not isinstance(message, dict) or "id" not in message or not isinstance(message.get("method"), str):
        return False
    params = message.get("params")
    meta = params.get("_meta") if isinstance(params, dict) else None
    return not (isinstance(meta, dict) and "progressToken" in meta)


def _plain(
    scope: Mapping[str, Any],
    headers: Headers,
    message: Any,
    version: str,
    session_id: str | None,
    rules: Rules,
    *,
    modern: bool,
    legacy: bool,
) -> Plain | None:
    if not ((modern and session_id is None) or (legacy and "user" not in scope)):
        return None
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or message.keys() - _ENVELOPE_KEYS:
        return None
    request_id, method = message.get("id"), message.get("method")
    params = message.get("params", None if modern else {})  # a legacy request may leave out empty params
    if isinstance(request_id, bool) or not isinstance(request_id, int | str) or not isinstance(params, dict):
        return None
    meta = params.get("_meta", None if modern else {})
    if not isinstance(meta, dict) or "progressToken" in meta:
        return None
    if method == "tools/call":
        name, arguments = params.get("name"), params.get("arguments")
        if (
            params.keys() - _CALL_KEYS
            or not isinstance(name, str)
            or not (arguments is None or isinstance(arguments, dict))
        ):
            return None
    elif isinstance(method, str) and method in LIST_METHODS:
        cursor = params.get("cursor")
        if params.keys() - _LIST_KEYS or not (cursor is None or isinstance(cursor, str)):
            return None
    else:
        return None
    if not host_allowed(rules, headers.get("host"), headers.get("origin"), headers.get("content-type")):
        return None
    if sdk_compat.accepts(headers.get("accept", "")) != (True, True):
        return None
    if sdk_compat.duplicated_routing_header(headers.items()):
        return None
    if modern:
        if sdk_compat.ladder_rejects(message, headers):
            return None
        if method == "tools/call":
            schema = rules.tool_schema(params["name"])
            if schema is not None and sdk_compat.param_headers_reject(schema, params.get("arguments") or {}, headers):
                return None
        elif not sdk_compat.list_params_valid(method, version, params):
            return None
    return Plain(request_id, method, params, version, session_id)
