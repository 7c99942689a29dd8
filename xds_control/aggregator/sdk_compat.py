"""Everything the aggregator takes from the MCP SDK beyond building a `Server` and its HTTP app, in one module.

The endpoint (endpoint.py) answers plain requests as the SDK answers them, so
it needs the SDK's own request checks, result shaping and error mapping; the
session table needs to end a session in the SDK. Some of that is private to
the SDK: `StreamableHTTPSessionManager._server_instances` (the live sessions),
`ServerRunner._serialize` (a result's wire shape), and one behaviour, that the
transport reads `is_json_response_enabled` on each POST (`JSON_PER_REQUEST`).

`problems()` lists every private name this module relies on that the
installed SDK lacks; tests/aggregator/test_sdk_compat.py fails naming it, and
pyproject.toml pins `mcp` to the minor version that test covers. Nothing else
in the aggregator touches a private field or function of the SDK.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from types import SimpleNamespace
from typing import Any

from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult
from mcp.server.runner import ServerRunner, modern_error_data
from mcp.server.session import ServerSession
from mcp.server.streamable_http import (
    REQUEST_CANCELLED,
    StreamableHTTPServerTransport,
    check_accept_headers,
)
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params, handler_exception_to_error_data
from mcp_types import ErrorData
from mcp_types import methods as mcp_methods
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from xds_control.errors import AggregatorError

log = logging.getLogger(__name__)

MODERN_VERSIONS = frozenset(MODERN_PROTOCOL_VERSIONS)
HANDSHAKE_VERSIONS = frozenset(HANDSHAKE_PROTOCOL_VERSIONS)
CANCELLED = ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")  # a cancelled legacy request's answer


# -- what the SDK checks before a handler runs ----------------------------------------------------


def accepts(accept: str) -> tuple[bool, bool]:
    """(JSON, SSE) acceptable, by the SDK's reading of an Accept header."""
    return check_accept_headers(SimpleNamespace(headers={"accept": accept}))  # type: ignore[arg-type]


def duplicated_routing_header(items: Iterable[tuple[str, str]]) -> bool:
    return find_duplicated_routing_header(items) is not None


def ladder_rejects(message: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    """The SDK's 2026-07-28 inbound ladder (envelope, header/body agreement, supported version) refuses it."""
    return isinstance(classify_inbound_request(message, headers=dict(headers)), InboundLadderRejection)


def param_headers_reject(schema: Mapping[str, Any], arguments: Mapping[str, Any], headers: Mapping[str, str]) -> bool:
    return validate_mcp_param_headers(schema, arguments, headers) is not None


def list_params_valid(method: str, version: str, params: Mapping[str, Any]) -> bool:
    try:
        mcp_methods.validate_client_request(method, version, params)
    except (ValueError, KeyError, ValidationError):
        return False
    return True


def cancelled_request_id(params: Mapping[str, Any] | None) -> int | str | None:
    return cancelled_request_id_from_params(params)


def request_key(request_id: int | str) -> int | str:
    """The id a request is correlated by ("7" and 7 are one id, as in the SDK's dispatcher)."""
    return coerce_request_id(request_id)


# -- answers ----------------------------------------------------------------------------------------


class Shaper:
    """A handler's result in its wire form for one method and version, by the SDK's own pass
    (`ServerRunner._serialize`: cache hints, the version's schema sieve, `resultType` and the serverInfo
    stamp at 2026-07-28). Raises `MCPError` (INTERNAL_ERROR) for a result the version's schema refuses.
    `sieved`: the result was already shaped by this version's schema on its way in (a 2026-07-28 backend
    answering a client of its version), so only the envelope is added."""

    def __init__(self, server: Server[Any]) -> None:
        self._runner = ServerRunner(server, None, None)  # type: ignore[arg-type]  # both read only `server`
        self._hints = server.cache_hints

    def __call__(self, method: str, version: str, result: Mapping[str, Any], *, sieved: bool = False) -> dict[str, Any]:
        if not sieved or method in self._hints:
            return self._runner._serialize(method, version, dict(result))
        dumped = dict(result)
        if version in MODERN_VERSIONS and dumped.get("resultType") is None:
            dumped["resultType"] = "complete"
        return self._runner._stamp_server_info(version, dumped)


def error_data(exc: BaseException, *, modern: bool) -> ErrorData:
    """The wire error for a handler's exception, as the SDK's entry of that family maps it: its ladder
    (`MCPError`, a pydantic `ValidationError` as INVALID_PARAMS), then its catch-all: INTERNAL_ERROR on the
    modern entry, code 0 and the text on the legacy dispatcher."""
    if isinstance(exc, AggregatorError):
        exc = to_mcp_error(exc)
    if modern:
        return modern_error_data(exc if isinstance(exc, Exception) else RuntimeError())
    mapped = handler_exception_to_error_data(exc)
    if mapped is not None:
        return mapped
    log.error("handler raised", exc_info=exc)
    return ErrorData(code=0, message=str(exc))


def http_status(code: int) -> int:
    """The HTTP status the SDK's modern entry answers a JSON-RPC error code with."""
    return ERROR_CODE_HTTP_STATUS.get(code, 200)


def to_mcp_error(exc: AggregatorError) -> MCPError:
    return MCPError(exc.code, exc.message, exc.data)


async def errors_to_sdk(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware (innermost): the aggregator's own errors as the SDK's, which it maps to the wire."""
    try:
        return await call_next(ctx)
    except AggregatorError as exc:
        raise to_mcp_error(exc) from None


async def through_middleware(
    server: Server[Any], ctx: ServerRequestContext[Any, Any], inner: CallNext
) -> HandlerResult:
    """`inner` run inside the server's middleware chain, outermost first, as the SDK runs a handler."""
    call = inner
    for middleware in reversed(server.middleware):
        call = _bound(middleware, call)
    return await call(ctx)


def _bound(middleware: Any, call_next: CallNext) -> CallNext:
    async def call(ctx: ServerRequestContext[Any, Any]) -> HandlerResult:
        return await middleware(ctx, call_next)

    return call


# -- the SDK's legacy sessions ---------------------------------------------------------------------

_JSON_ANSWER: ContextVar[bool] = ContextVar("xds_control_json_answer", default=False)


class _JsonPerRequest:
    """Given to the SDK as `json_response`: its legacy transport tests `is_json_response_enabled` on each POST,
    so this answers one request as a JSON body exactly while `json_answers(True)` is entered around it. The
    transport's message router, a task of its own, always sees false: safe, because a request answered as
    JSON has no progress token, and progress is the only message the aggregator relates to a request."""

    def __bool__(self) -> bool:
        return _JSON_ANSWER.get()


JSON_PER_REQUEST: Any = _JsonPerRequest()


@contextlib.contextmanager
def json_answers(on: bool) -> Iterator[None]:
    token = _JSON_ANSWER.set(on)
    try:
        yield
    finally:
        _JSON_ANSWER.reset(token)


def _transports(server: Server[Any]) -> dict[str, StreamableHTTPServerTransport]:
    try:
        manager = server.session_manager
    except RuntimeError:  # the HTTP app is not built yet
        return {}
    instances = getattr(manager, "_server_instances", None)
    return instances if isinstance(instances, dict) else {}


def session_live(server: Server[Any], session_id: str) -> bool:
    """The SDK still serves this session."""
    transport = _transports(server).get(session_id)
    return transport is not None and not transport.is_terminated


async def end_session(server: Server[Any], session_id: str) -> None:
    """End a session in the SDK as a DELETE would: its streams close, its id answers 404, its task ends."""
    transport = _transports(server).get(session_id)
    if transport is not None and not transport.is_terminated:
        await transport.terminate()


# -- the guard ----------------------------------------------------------------------------------


async def send_request_as(
    session: ServerSession,
    request_id: str,
    method: str,
    params: Mapping[str, Any] | None,
    *,
    related: bool,
    timeout: float,
) -> dict[str, Any]:
    """A server-to-client request under an id of the caller's (the dispatcher's `request_id` call option), on the
    stream of the request `session` serves (`related`) or the session's standalone stream: the caller can then
    name it in a `notifications/cancelled` after that request's stream closed. Private: the two channels of the
    SDK's per-request `ServerSession`."""
    channel = session._request_outbound if related else session._connection.outbound
    return dict(await channel.send_raw_request(method, params, {"request_id": request_id, "timeout": timeout}))


def problems() -> list[str]:
    """The private SDK names this module relies on that the installed SDK lacks or changed (empty: none)."""
    found: list[str] = []
    manager_init = inspect.getsource(StreamableHTTPSessionManager.__init__)
    if "self._server_instances: dict[str, StreamableHTTPServerTransport]" not in manager_init:
        found.append("StreamableHTTPSessionManager._server_instances")
    serialize = getattr(ServerRunner, "_serialize", None)
    if serialize is None or list(inspect.signature(serialize).parameters) != ["self", "method", "version", "result"]:
        found.append("ServerRunner._serialize(method, version, result)")
    stamp = getattr(ServerRunner, "_stamp_server_info", None)
    if stamp is None or list(inspect.signature(stamp).parameters) != ["self", "version", "result"]:
        found.append("ServerRunner._stamp_server_info(version, result)")
    post = inspect.getsource(StreamableHTTPServerTransport._handle_post_request)
    if "if self.is_json_response_enabled:" not in post:
        found.append("StreamableHTTPServerTransport.is_json_response_enabled (read on each POST)")
    session_init = inspect.getsource(ServerSession.__init__)
    if "self._request_outbound = request_outbound" not in session_init or "self._connection = connection" not in (
        session_init
    ):
        found.append("ServerSession._request_outbound, ServerSession._connection.outbound")
    for name in ("protocol_version", "client_params"):
        if not isinstance(getattr(ServerSession, name, None), property):
            found.append(f"ServerSession.{name}")
    return found
