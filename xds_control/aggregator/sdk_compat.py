"""Every place the aggregator relies on the MCP SDK beyond its documented API, in one module.

The SDK is pinned to the minor version `tests/aggregator/test_sdk_compat.py`
covers; that test fails, naming the field, when a release changes one of
these. Nothing else in the aggregator reads or writes a private field of the
SDK or calls one of its private functions.
"""

from __future__ import annotations

import logging
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.runner import modern_error_data
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp_types import INTERNAL_ERROR, ErrorData

from xds_control.errors import AggregatorError

log = logging.getLogger(__name__)


def to_mcp_error(exc: AggregatorError) -> MCPError:
    return MCPError(exc.code, exc.message, exc.data)


async def errors_to_sdk(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware (innermost): the aggregator's own errors as the SDK's, which it maps to the wire."""
    try:
        return await call_next(ctx)
    except AggregatorError as exc:
        raise to_mcp_error(exc) from None


def error_data(exc: BaseException, *, modern: bool) -> ErrorData:
    """The wire error for a handler's exception, as the SDK's entry of that family maps it: the SDK's ladder
    (`MCPError`, a pydantic `ValidationError` as INVALID_PARAMS), then its catch-all: INTERNAL_ERROR on the
    modern entry, code 0 and the text on the legacy dispatcher."""
    if isinstance(exc, AggregatorError):
        exc = to_mcp_error(exc)
    if modern and isinstance(exc, Exception):
        return modern_error_data(exc)
    mapped = handler_exception_to_error_data(exc)
    if mapped is not None:
        return mapped
    log.error("handler raised", exc_info=exc)
    return (
        ErrorData(code=0, message=str(exc))
        if not modern
        else ErrorData(code=INTERNAL_ERROR, message="Internal server error")
    )
