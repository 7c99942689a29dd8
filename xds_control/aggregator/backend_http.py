"""One backend's HTTP, the one way requests leave the aggregator: a keep-alive client, its credential, the
answer mapping (upstream_answers.py) applied.

`BackendHttp.post` is what both families' requests go through: a 2026-07-28 request (modern_request.py)
directly, a legacy SDK session's POSTs through the httpx2 adapter the SDK client needs (sdk_transport.py).
It never raises for a failed exchange: the answer is `Passed` (a JSON body, decoded), `EdgeFailure` (a
sanitized category, refused and reset connections included) or `Streamed` (an answer to read as a stream:
an event stream, any other content type). `send` is a plain request for the SDK's GET stream and DELETE,
whose failures are the builtin errors of xds_control/http11.py.

The credential header is set here on every request from the backend's cached `Credential` (auth.py; re-read
only after a 401/403). Bodies are read within `max_response_bytes` (an error answer's within 64 KiB), decoded
(gzip, deflate). One `HttpClient` per backend (no pool shared with other backends; no proxy, no environment),
kept alive up to `max_idle` connections; no read timeout (MCP answers may stream for long: the call deadline,
`aggregator.call_timeout`, is the caller's).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from xds_control.aggregator import metrics
from xds_control.aggregator.upstream_answers import (
    DEFAULT_MAX_RESPONSE_BYTES,
    SESSION_HEADER,
    EdgeFailure,
    Passed,
    body_limit,
    failure_category,
    map_answer,
)
from xds_control.http11 import HttpClient, Response, tls_context

HeaderSource = Callable[[], tuple[str, str] | None]
CONNECT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Streamed:
    """An answer `map_answer` left to its caller: read `response` (and `aclose` it)."""

    response: Response


class BackendHttp:
    """HTTP to one backend; see the module docstring."""

    def __init__(
        self,
        backend: str,
        *,
        headers: HeaderSource | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_idle: int = 32,
    ) -> None:
        self.backend = backend
        self.credential = headers
        self.max_response_bytes = max_response_bytes
        self.connect_timeout = connect_timeout
        self._client = HttpClient(tls_context(), max_idle=max_idle)
        self._requests = metrics.UPSTREAM_REQUESTS.labels(backend=backend)

    def _with_credential(self, headers: dict[str, str]) -> dict[str, str]:
        credential = self.credential() if self.credential is not None else None
        return headers if credential is None else {**headers, credential[0].lower(): credential[1]}

    async def post(self, url: str, headers: dict[str, str], content: bytes) -> Passed | EdgeFailure | Streamed:
        """One POST and what its answer is. `headers`: lower-case names, none hop-by-hop."""
        sent_session = SESSION_HEADER in headers
        headers = self._with_credential(headers)
        self._requests.inc()
        try:
            response = await self._client.send(
                "POST", url, headers=headers, content=content, connect_timeout=self.connect_timeout
            )
        except Exception as exc:
            category = failure_category(exc)
            if category is None:
                raise
            return EdgeFailure(category)
        limit = body_limit(response.status_code, response.headers, self.max_response_bytes)
        if limit is None:
            return Streamed(response)
        body: bytes | None
        try:
            body = await response.read(limit)
        except Exception as exc:
            category = failure_category(exc, reading=True)
            if category is None:
                raise
            if response.status_code >= 400:
                body = b""  # the status says enough
            elif category == "response_too_large":
                body = None
            else:
                return EdgeFailure(category)
        finally:
            await response.aclose()
        answer = map_answer(response.status_code, response.headers, body, sent_session=sent_session)
        assert answer is not None  # a body was asked for: the answer is decided
        return answer

    async def send(self, method: str, url: str, headers: dict[str, str], content: bytes | None) -> Response:
        """A plain request (the SDK client's GET stream, its DELETE); the response's body is the caller's."""
        headers = self._with_credential(headers)
        self._requests.inc()
        return await self._client.send(
            method, url, headers=headers, content=content, connect_timeout=self.connect_timeout
        )

    async def aclose(self) -> None:
        await self._client.aclose()
