"""Categories for the exception classes of httpx2, httpcore2, anyio, pydantic and the MCP SDK.

Kept apart from `classify` so the control plane, whose prober uses none of
these libraries, does not import them (the MCP SDK alone is large in memory):
`classify` loads this module only when it meets an exception from one of
them, and such an exception means its library is already imported.
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import httpcore2
import httpx2
import pydantic
from mcp.client.auth.exceptions import OAuthFlowError, OAuthRegistrationError, OAuthTokenError
from mcp.client.streamable_http import ResumptionError, StreamableHTTPError
from mcp.client.subscriptions import ListenNotSupportedError, SubscriptionLost
from mcp.shared.exceptions import MCPError, NoBackChannelError, UrlElicitationRequiredError

from xds_control.errors import ProbeError
from xds_control.health.classify import Category, classify_jsonrpc_error, classify_status

C = Category
LIBRARY_CATEGORIES: Mapping[type[BaseException], Category] = {
    # httpx2 (the classes of its own exception tree, drawn in httpx2/_exceptions.py)
    httpx2.HTTPError: C.UNKNOWN,
    httpx2.RequestError: C.UNKNOWN,
    httpx2.TransportError: C.UNKNOWN,
    httpx2.TimeoutException: C.TIMEOUT,
    httpx2.ConnectTimeout: C.TIMEOUT,
    httpx2.ReadTimeout: C.TIMEOUT,
    httpx2.WriteTimeout: C.TIMEOUT,
    httpx2.PoolTimeout: C.TIMEOUT,
    httpx2.NetworkError: C.CONNECTION_RESET,
    httpx2.ConnectError: C.CONNECTION_REFUSED,  # refined by its cause: gaierror -> dns, SSLError -> tls
    httpx2.ReadError: C.CONNECTION_RESET,
    httpx2.WriteError: C.CONNECTION_RESET,
    httpx2.CloseError: C.CONNECTION_RESET,
    httpx2.ProxyError: C.CONNECTION_REFUSED,
    httpx2.UnsupportedProtocol: C.PROTOCOL_ERROR,
    httpx2.ProtocolError: C.PROTOCOL_ERROR,
    httpx2.LocalProtocolError: C.PROTOCOL_ERROR,
    httpx2.RemoteProtocolError: C.PROTOCOL_ERROR,  # "server disconnected" is refined to connection_reset
    httpx2.DecodingError: C.PROTOCOL_ERROR,
    httpx2.TooManyRedirects: C.PROTOCOL_ERROR,
    httpx2.HTTPStatusError: C.UNKNOWN,  # refined by its response status
    httpx2.InvalidURL: C.PROTOCOL_ERROR,
    httpx2.CookieConflict: C.PROTOCOL_ERROR,
    httpx2.StreamError: C.PROTOCOL_ERROR,
    httpx2.StreamConsumed: C.PROTOCOL_ERROR,
    httpx2.StreamClosed: C.CONNECTION_RESET,
    httpx2.ResponseNotRead: C.PROTOCOL_ERROR,
    httpx2.RequestNotRead: C.PROTOCOL_ERROR,
    httpx2.SSEError: C.PROTOCOL_ERROR,
    # httpcore2 (normally wrapped by httpx2, but seen raw inside groups and chains)
    httpcore2.ConnectionNotAvailable: C.CONNECTION_RESET,
    httpcore2.ProxyError: C.CONNECTION_REFUSED,
    httpcore2.UnsupportedProtocol: C.PROTOCOL_ERROR,
    httpcore2.ProtocolError: C.PROTOCOL_ERROR,
    httpcore2.RemoteProtocolError: C.PROTOCOL_ERROR,
    httpcore2.LocalProtocolError: C.PROTOCOL_ERROR,
    httpcore2.TimeoutException: C.TIMEOUT,
    httpcore2.PoolTimeout: C.TIMEOUT,
    httpcore2.ConnectTimeout: C.TIMEOUT,
    httpcore2.ReadTimeout: C.TIMEOUT,
    httpcore2.WriteTimeout: C.TIMEOUT,
    httpcore2.NetworkError: C.CONNECTION_RESET,
    httpcore2.ConnectError: C.CONNECTION_REFUSED,
    httpcore2.ReadError: C.CONNECTION_RESET,
    httpcore2.WriteError: C.CONNECTION_RESET,
    # anyio (the SDK's streams)
    anyio.BrokenResourceError: C.CONNECTION_RESET,
    anyio.ClosedResourceError: C.CONNECTION_RESET,
    anyio.EndOfStream: C.CONNECTION_RESET,
    anyio.BusyResourceError: C.UNKNOWN,
    anyio.WouldBlock: C.UNKNOWN,
    anyio.IncompleteRead: C.CONNECTION_RESET,
    anyio.DelimiterNotFound: C.PROTOCOL_ERROR,
    anyio.TypedAttributeLookupError: C.UNKNOWN,
    anyio.ConnectionFailed: C.CONNECTION_REFUSED,  # "all connection attempts failed"; its cause refines it
    anyio.NoEventLoopError: C.UNKNOWN,
    anyio.RunFinishedError: C.UNKNOWN,
    anyio.BrokenWorkerProcess: C.UNKNOWN,
    anyio.BrokenWorkerInterpreter: C.UNKNOWN,
    anyio.TaskFailed: C.UNKNOWN,
    anyio.TaskCancelled: C.UNKNOWN,
    anyio.TaskNotFinished: C.UNKNOWN,
    anyio.FutureFailed: C.UNKNOWN,
    anyio.FutureCancelled: C.UNKNOWN,
    anyio.FutureNotFinished: C.UNKNOWN,
    anyio.FutureAlreadyFinished: C.UNKNOWN,
    pydantic.ValidationError: C.PROTOCOL_ERROR,
    # the MCP SDK
    MCPError: C.JSONRPC_ERROR,  # refined by its code
    NoBackChannelError: C.JSONRPC_ERROR,
    UrlElicitationRequiredError: C.JSONRPC_ERROR,
    StreamableHTTPError: C.PROTOCOL_ERROR,
    ResumptionError: C.PROTOCOL_ERROR,
    ListenNotSupportedError: C.PROTOCOL_ERROR,
    SubscriptionLost: C.CONNECTION_RESET,
    OAuthFlowError: C.AUTHENTICATION_FAILED,
    OAuthTokenError: C.AUTHENTICATION_FAILED,
    OAuthRegistrationError: C.AUTHENTICATION_FAILED,
}
del C


def refine(exc: BaseException) -> ProbeError | None:
    """What the exception's attributes say beyond its class (a status, an SDK error code, a disconnect)."""
    if isinstance(exc, httpx2.HTTPStatusError):
        return classify_status(exc.response.status_code, exc.response.headers)
    if isinstance(exc, MCPError):
        return classify_jsonrpc_error({"code": exc.code, "message": exc.error.message}, from_wire=False)
    if isinstance(exc, httpx2.RemoteProtocolError | httpcore2.RemoteProtocolError):
        text = str(exc).lower()
        if "disconnected" in text or "peer closed" in text or "connection closed" in text:
            return ProbeError(Category.CONNECTION_RESET, type(exc).__name__)
    return None
