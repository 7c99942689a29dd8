"""Outgoing credentials and what happens after a backend answers 401/403.

* `Credential`: a backend's header (bearer or custom, from `token_env` or
  `token_file`), read at start and re-read only after an auth failure. The
  value is never logged or put in an error. Concurrent refreshes for one
  backend are coalesced: callers pass the credential version their failed
  attempt used, and only the first of them re-reads.
* `AuthBreaker`: pure, clock-injected. After `threshold` consecutive retry
  sequences end exhausted it opens: auth failures then fail at once, without
  re-reading or retrying, until `cooldown` has passed; then one sequence is let
  through (half-open); recovering closes it, failing re-opens it.
* `with_auth_retry`: a call, and on an auth failure a retry sequence (one
  OpenTelemetry span): re-read the credential, retry up to `retries` times
  with exponential backoff (tenacity), the first retry immediately.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio.to_thread
from opentelemetry import trace
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from xds_control.aggregator import metrics
from xds_control.aggregator.rpc_errors import AUTH
from xds_control.config import AuthConfig
from xds_control.errors import BackendError

T = TypeVar("T")
tracer = trace.get_tracer("xds_control.aggregator")


class Credential:
    """One backend's outgoing auth header, cached; `version` counts reads."""

    def __init__(self, auth: AuthConfig | None) -> None:
        self._auth = auth
        self._value = auth.header_value() if auth is not None else None
        self.version = 0
        self.reads = 1 if auth is not None else 0
        self._refreshing: asyncio.Future[None] | None = None

    def header(self) -> tuple[str, str] | None:
        return self._value

    async def refresh(self, seen_version: int) -> None:
        """Re-read the credential unless someone already did since `seen_version`; join a refresh in flight."""
        if self._auth is None or self.version > seen_version:
            return
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._reload())
        await asyncio.shield(self._refreshing)

    async def _reload(self) -> None:
        try:
            auth = self._auth
            assert auth is not None
            self._value = await anyio.to_thread.run_sync(auth.header_value)
            self.reads += 1
            self.version += 1
        finally:
            self._refreshing = None


class AuthBreaker:
    """Stops auth retry sequences for a backend that keeps rejecting; see the module docstring."""

    def __init__(self, threshold: int = 5, cooldown: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self.state = "closed"
        self.exhausted = 0
        self._opened_at = 0.0
        self._probing = False

    def try_acquire(self) -> bool:
        """May a retry sequence start now? (In half-open, only one at a time.)"""
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() >= self._opened_at + self.cooldown:
            self.state = "half_open"
        if self.state == "half_open" and not self._probing:
            self._probing = True
            return True
        return False

    def release(self) -> None:
        """A sequence ended neither recovered nor exhausted (cancelled, another failure)."""
        self._probing = False

    def record_success(self) -> None:
        self.state, self.exhausted, self._probing = "closed", 0, False

    def record_exhausted(self) -> None:
        self._probing = False
        self.exhausted += 1
        if self.state == "half_open" or self.exhausted >= self.threshold:
            self.state = "open"
            self._opened_at = self._clock()

    @property
    def retry_after(self) -> float | None:
        if self.state != "open":
            return None
        return max(0.0, self._opened_at + self.cooldown - self._clock())


def _is_auth(exc: BaseException) -> bool:
    return isinstance(exc, BackendError) and exc.outcome == AUTH


async def with_auth_retry(
    backend: str,
    credential: Credential,
    breaker: AuthBreaker,
    attempt: Callable[[], Awaitable[T]],
    *,
    retries: int = 3,
    base_delay: float = 0.1,
    max_delay: float = 2.0,
) -> T:
    """Run `attempt`; on a 401/403 re-read the credential and retry (see the module docstring)."""
    seen = credential.version
    try:
        result = await attempt()
    except BackendError as exc:
        if exc.outcome != AUTH:
            raise
        failure = exc
    else:
        if breaker.state != "closed" or breaker.exhausted:
            breaker.record_success()
        return result
    if not breaker.try_acquire():
        metrics.AUTH_RETRIES.labels(backend=backend, result="breaker_open").inc()
        data = {**(failure.data or {}), "auth_breaker": "open", "retry_after": breaker.retry_after}
        raise BackendError(failure.code, failure.message, data, AUTH) from None
    with tracer.start_as_current_span(
        "xds_control.aggregator.auth_retry", attributes={"backend": backend, "retries.max": retries}
    ) as span:
        tries = 0
        try:
            retrying = AsyncRetrying(
                stop=stop_after_attempt(retries),
                wait=wait_exponential(multiplier=base_delay, max=max_delay),
                retry=retry_if_exception(_is_auth),
                reraise=True,
            )
            async for try_state in retrying:
                with try_state:
                    tries += 1
                    await credential.refresh(seen)
                    seen = credential.version
                    result = await attempt()
        except BackendError as exc:
            if exc.outcome != AUTH:
                breaker.release()
                raise
            breaker.record_exhausted()
            metrics.AUTH_RETRIES.labels(backend=backend, result="exhausted").inc()
            span.set_attributes({"retries": tries, "result": "exhausted"})
            span.set_status(trace.Status(trace.StatusCode.ERROR, "authentication_failed"))
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.record_success()
        metrics.AUTH_RETRIES.labels(backend=backend, result="recovered").inc()
        span.set_attributes({"retries": tries, "result": "recovered"})
        return result
