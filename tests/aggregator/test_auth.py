"""Outgoing credentials, the auth retry sequence and the auth breaker (no network)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from xds_control.aggregator import auth
from xds_control.aggregator.auth import AuthBreaker, Credential, with_auth_retry
from xds_control.aggregator.rpc_errors import BACKEND_AUTH_FAILED, backend_failed
from xds_control.config import AuthConfig


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(auth, "tracer", provider.get_tracer("test"))
    return exporter


def denied() -> Exception:
    return backend_failed("b", "authentication_failed", status=401)


class Backend:
    """A fake call: fails with 401 until the credential it is handed equals `accepts`."""

    def __init__(self, credential: Credential, accepts: str | None) -> None:
        self.credential = credential
        self.accepts = accepts
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        header = self.credential.header()
        if header is None or header[1] != f"Bearer {self.accepts}":
            raise denied()
        return "ok"


def token_file(tmp_path: Path, value: str) -> tuple[AuthConfig, Path]:
    path = tmp_path / "token"
    path.write_text(value)
    return AuthConfig(token_file=str(path)), path


class TestCredential:
    async def test_reads_once_and_rereads_on_refresh(self, tmp_path: Path) -> None:
        cfg, path = token_file(tmp_path, "one")
        cred = Credential(cfg)
        assert cred.header() == ("Authorization", "Bearer one")
        path.write_text("two")
        assert cred.header() == ("Authorization", "Bearer one")  # cached until an auth failure
        await cred.refresh(cred.version)
        assert cred.header() == ("Authorization", "Bearer two") and cred.reads == 2

    async def test_concurrent_refreshes_are_one_read(self, tmp_path: Path) -> None:
        cfg, path = token_file(tmp_path, "one")
        cred = Credential(cfg)
        seen = cred.version
        path.write_text("two")
        await asyncio.gather(*(cred.refresh(seen) for _ in range(20)))
        assert cred.reads == 2 and cred.version == seen + 1
        await cred.refresh(seen)  # a caller that saw the old version: already refreshed
        assert cred.reads == 2

    async def test_header_type_and_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AGG_TEST_TOKEN", "xyz")
        assert Credential(AuthConfig(type="header", header="X-Api-Key", token_env="AGG_TEST_TOKEN")).header() == (
            "X-Api-Key",
            "xyz",
        )
        assert Credential(None).header() is None


class TestBreaker:
    def test_opens_after_threshold_exhausted_sequences_and_lets_one_through_after_cooldown(self) -> None:
        clock = Clock()
        b = AuthBreaker(threshold=3, cooldown=10, clock=clock)
        for _ in range(2):
            assert b.try_acquire()
            b.record_exhausted()
        assert b.state == "closed"
        assert b.try_acquire()
        b.record_exhausted()
        assert b.state == "open" and not b.try_acquire() and b.retry_after == 10
        clock.now += 10
        assert b.try_acquire() and b.state == "half_open"
        assert not b.try_acquire()  # one sequence at a time
        b.record_exhausted()
        assert b.state == "open"
        clock.now += 10
        assert b.try_acquire()
        b.record_success()
        assert b.state == "closed" and b.exhausted == 0 and b.retry_after is None

    def test_a_released_probe_frees_the_half_open_slot(self) -> None:
        clock = Clock()
        b = AuthBreaker(threshold=1, cooldown=1, clock=clock)
        b.record_exhausted()
        clock.now += 1
        assert b.try_acquire()
        b.release()
        assert b.try_acquire()

    def test_success_resets_the_count(self) -> None:
        b = AuthBreaker(threshold=2)
        b.record_exhausted()
        b.record_success()
        b.record_exhausted()
        assert b.state == "closed"


class TestRetrySequence:
    async def test_a_rotated_token_recovers_in_one_span(self, tmp_path: Path, spans: InMemorySpanExporter) -> None:
        cfg, path = token_file(tmp_path, "old")
        cred = Credential(cfg)
        backend = Backend(cred, accepts="new")
        path.write_text("new")
        assert await with_auth_retry("b", cred, AuthBreaker(), backend, base_delay=0) == "ok"
        assert backend.calls == 2
        [span] = spans.get_finished_spans()
        assert span.name == "xds_control.aggregator.auth_retry"
        assert (
            span.attributes["backend"] == "b"
            and span.attributes["result"] == "recovered"
            and span.attributes["retries"] == 1
        )

    async def test_exhaustion_after_three_retries(self, tmp_path: Path, spans: InMemorySpanExporter) -> None:
        cfg, _ = token_file(tmp_path, "old")
        cred = Credential(cfg)
        backend = Backend(cred, accepts="never")
        breaker = AuthBreaker()
        with pytest.raises(Exception) as info:
            await with_auth_retry("b", cred, breaker, backend, base_delay=0)
        assert info.value.code == BACKEND_AUTH_FAILED
        assert backend.calls == 4 and cred.reads == 4  # the call, then 3 retries each after a re-read
        assert breaker.exhausted == 1
        [span] = spans.get_finished_spans()
        assert span.attributes["result"] == "exhausted" and not span.status.is_ok

    async def test_no_span_and_no_reread_without_an_auth_failure(
        self, tmp_path: Path, spans: InMemorySpanExporter
    ) -> None:
        cfg, _ = token_file(tmp_path, "t")
        cred = Credential(cfg)
        assert await with_auth_retry("b", cred, AuthBreaker(), Backend(cred, accepts="t")) == "ok"
        assert cred.reads == 1 and spans.get_finished_spans() == ()

    async def test_other_errors_are_not_retried(self) -> None:
        calls = 0

        async def failing() -> None:
            nonlocal calls
            calls += 1
            raise backend_failed("b", "http_5xx", status=500)

        with pytest.raises(Exception, match="http 5xx"):
            await with_auth_retry("b", Credential(None), AuthBreaker(), failing, base_delay=0)
        assert calls == 1

    async def test_an_open_breaker_fails_at_once_naming_it(self, tmp_path: Path) -> None:
        cfg, _ = token_file(tmp_path, "old")
        cred = Credential(cfg)
        backend = Backend(cred, accepts="never")
        breaker = AuthBreaker(threshold=5, cooldown=60)
        for _ in range(5):
            with pytest.raises(Exception):
                await with_auth_retry("b", cred, breaker, backend, base_delay=0)
        assert breaker.state == "open"
        calls, reads = backend.calls, cred.reads
        with pytest.raises(Exception) as info:
            await with_auth_retry("b", cred, breaker, backend, base_delay=0)
        assert backend.calls == calls + 1 and cred.reads == reads  # one try, no re-read, no retries
        assert info.value.data["auth_breaker"] == "open" and info.value.data["retry_after"] > 0

    async def test_concurrent_failures_share_refreshes(self, tmp_path: Path) -> None:
        cfg, path = token_file(tmp_path, "old")
        cred = Credential(cfg)
        backend = Backend(cred, accepts="new")
        path.write_text("new")
        results = await asyncio.gather(
            *(with_auth_retry("b", cred, AuthBreaker(), backend, base_delay=0) for _ in range(10))
        )
        assert results == ["ok"] * 10
        assert cred.reads == 2
