"""A backend's requests and notifications reach the client whose call it serves: real asking backends
(examples/backends/asking_server.py), the in-process aggregator, real SDK clients with handlers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from tests.aggregator.support import fetch_catalog, mcp_client, through_envoy
from tests.examples.test_third_party import needs_servers, start_everything
from tests.support.procs import Proc, python_module
from tests.support.stack import running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_port
from xds_control.aggregator import BACKEND_FAILED, AdminViewSource, Aggregator, direct_upstream_url
from xds_control.aggregator.relay import DEFAULT_MAX_PENDING
from xds_control.view import Catalog

pytestmark = pytest.mark.integration


@dataclass
class Asking:
    url: str
    catalog: Catalog
    proc: Proc


def start_asking(name: str = "asking") -> tuple[Proc, str]:
    port = free_port()
    proc = python_module("examples.backends.asking_server", "--name", name, "--port", str(port), name=f"backend-{name}")
    proc.wait_for_line("READY", timeout=30)
    return proc, f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="module")
def asking() -> Iterator[Asking]:
    proc, url = start_asking()
    try:
        yield Asking(url, asyncio.run(fetch_catalog(url)), proc)
    finally:
        proc.signal(signal.SIGTERM)
        proc.stop()


@dataclass
class Handlers:
    """A client that answers everything: elicitation with `ok`, sampling with `model`, roots with `roots`."""

    ok: bool = True
    model: str = "m"
    roots: tuple[str, ...] = ("file:///work",)
    asked: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set, elicitation waits for it
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    logs: list[str] = field(default_factory=list)
    completed: list[str] = field(default_factory=list)  # notifications/elicitation/complete, by elicitation id

    async def elicit(self, ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.asked.append(params.message)
        self.entered.set()
        if self.gate is not None:
            try:
                await self.gate.wait()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        if isinstance(params, types.ElicitRequestURLParams):
            return types.ElicitResult(action="accept")
        return types.ElicitResult(action="accept", content={"ok": self.ok})

    async def sample(self, ctx: Any, params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        text = params.messages[0].content.text  # type: ignore[union-attr]
        self.asked.append(text)
        reply = types.TextContent(type="text", text=f"re: {text}")
        return types.CreateMessageResult(role="assistant", content=reply, model=self.model)

    async def list_roots(self, ctx: Any) -> types.ListRootsResult:
        return types.ListRootsResult(roots=[types.Root(uri=u) for u in self.roots])  # type: ignore[arg-type]

    async def log(self, params: types.LoggingMessageNotificationParams) -> None:
        self.logs.append(f"{params.level}:{params.data}")

    async def message(self, message: Any) -> None:
        if isinstance(message, types.ElicitCompleteNotification):
            self.completed.append(message.params.elicitation_id)

    def kwargs(self) -> dict[str, Any]:
        return {
            "message_handler": self.message,
            "elicitation_callback": self.elicit,
            "sampling_callback": self.sample,
            "list_roots_callback": self.list_roots,
            "logging_callback": self.log,
        }


@contextlib.asynccontextmanager
async def asking_client(url: str, handlers: Handlers | None) -> AsyncIterator[Any]:
    async with mcp_client(url, "legacy", **(handlers.kwargs() if handlers else {})) as client:
        yield client


def text(result: types.CallToolResult) -> str:
    return result.content[0].text  # type: ignore[union-attr]


def entries(asking: Asking) -> list[dict[str, Any]]:
    return [{"name": "asking", "url": asking.url}]


async def test_each_request_reaches_the_calling_client_and_its_answer_the_backend(
    serve: Callable[..., Any], asking: Asking
) -> None:
    async with serve(entries(asking), catalogs={"asking": asking.catalog}, conflict_resolution="priority") as running:
        handlers = Handlers(ok=True, model="gpt-x", roots=("file:///a", "file:///b"))
        async with asking_client(running.url, handlers) as client:
            assert text(await client.call_tool("confirm", {"question": "sure?"})) == "accept: True"
            assert text(await client.call_tool("visit", {"url": "https://example.com/login"})) == "url accept"
            await async_wait_until(lambda: handlers.completed == ["e-1"], timeout=5, what="elicitation/complete")
            assert text(await client.call_tool("summarize", {"text": "hello"})) == "model gpt-x: re: hello"
            assert text(await client.call_tool("roots", {})) == "file:///a,file:///b"
            assert handlers.asked == ["sure?", "sign in", "hello"]
        assert running.aggregator.backchannel.relayed == {"answered": 4}


async def test_two_concurrent_clients_each_answer_only_their_own_requests(
    serve: Callable[..., Any], asking: Asking
) -> None:
    async with serve(entries(asking), catalogs={"asking": asking.catalog}, conflict_resolution="priority") as running:
        one, two = Handlers(ok=True, model="one"), Handlers(ok=False, model="two")
        async with asking_client(running.url, one) as c1, asking_client(running.url, two) as c2:

            async def calls(client: Any, tag: str) -> list[str]:
                answers = []
                for i in range(5):
                    answers.append(text(await client.call_tool("confirm", {"question": f"{tag}-{i}"})))
                    answers.append(text(await client.call_tool("summarize", {"text": f"{tag}-{i}"})))
                return answers

            a1, a2 = await asyncio.gather(calls(c1, "one"), calls(c2, "two"))
        assert a1 == [x for i in range(5) for x in ("accept: True", f"model one: re: one-{i}")]
        assert a2 == [x for i in range(5) for x in ("accept: False", f"model two: re: two-{i}")]
        assert all(q.startswith("one-") for q in one.asked) and len(one.asked) == 10
        assert all(q.startswith("two-") for q in two.asked) and len(two.asked) == 10


async def test_a_client_without_the_capabilities_gets_the_backends_fallback(
    serve: Callable[..., Any], asking: Asking
) -> None:
    async with serve(entries(asking), catalogs={"asking": asking.catalog}, conflict_resolution="priority") as running:
        async with asking_client(running.url, None) as client:
            for tool, fallback in (("confirm", "no elicitation"), ("visit", "no url elicitation"),
                                   ("summarize", "no sampling"), ("roots", "no roots")):  # fmt: skip
                result = await asyncio.wait_for(client.call_tool(tool, {"question": "q", "url": "u", "text": "t"}), 10)
                assert text(result) == f"fallback: {fallback}"
        # a 2026-07-28 client has no back channel: however capable, a legacy backend is offered nothing for it
        capable = Handlers()
        async with mcp_client(running.url, "2026-07-28", elicitation_callback=capable.elicit) as client:
            assert text(await client.call_tool("confirm", {"question": "q"})) == "fallback: no elicitation"
        assert capable.asked == []
        # a client with elicitation only is not offered sampling or roots
        only = Handlers()
        async with mcp_client(running.url, "legacy", elicitation_callback=only.elicit) as client:
            assert text(await client.call_tool("confirm", {"question": "q"})) == "accept: True"
            assert text(await client.call_tool("summarize", {"text": "t"})) == "fallback: no sampling"
            assert text(await client.call_tool("roots", {})) == "fallback: no roots"


async def test_a_cancelled_call_cancels_the_pending_elicitation_on_both_sides(
    serve: Callable[..., Any], asking: Asking
) -> None:
    async with serve(entries(asking), catalogs={"asking": asking.catalog}, conflict_resolution="priority") as running:
        handlers = Handlers(gate=asyncio.Event())
        async with asking_client(running.url, handlers) as client:
            before = text(await client.call_tool("stats", {}))
            call = asyncio.ensure_future(client.call_tool("confirm", {"question": "wait"}))
            await asyncio.wait_for(handlers.entered.wait(), 10)
            call.cancel()  # the SDK client sends notifications/cancelled for the call
            with contextlib.suppress(asyncio.CancelledError):
                await call
            await asyncio.wait_for(handlers.cancelled.wait(), 10)  # the backend's cancel came back to the client
            wanted = f"cancelled={int(before.split('=')[1]) + 1}"
            await async_wait_until(
                lambda: _stats(client, wanted), timeout=10, what="the backend to see its call cancelled"
            )
            handlers.gate = None
            assert text(await client.call_tool("confirm", {"question": "again"})) == "accept: True"


async def test_relayed_requests_waiting_per_client_are_capped_and_the_rest_refused_at_once(
    serve: Callable[..., Any], asking: Asking
) -> None:
    async with serve(entries(asking), catalogs={"asking": asking.catalog}, conflict_resolution="priority") as running:
        handlers = Handlers(gate=asyncio.Event())
        async with asking_client(running.url, handlers) as client:
            call = asyncio.ensure_future(client.call_tool("flood", {"n": 20}))
            await async_wait_until(lambda: len(handlers.asked) == DEFAULT_MAX_PENDING, timeout=10, what="16 pending")
            assert running.aggregator.backchannel.book.waiting() == DEFAULT_MAX_PENDING
            assert running.aggregator.backchannel.relayed.get("over_limit") == 20 - DEFAULT_MAX_PENDING
            handlers.gate.set()
            assert text(await asyncio.wait_for(call, 10)) == f"answered={DEFAULT_MAX_PENDING} refused=4"
            assert len(handlers.asked) == DEFAULT_MAX_PENDING
            assert running.aggregator.backchannel.book.waiting() == 0


async def test_a_client_that_never_answers_is_timed_out_within_its_call_and_told_so(
    serve: Callable[..., Any], asking: Asking
) -> None:
    entry = entries(asking)
    async with serve(
        entry, catalogs={"asking": asking.catalog}, conflict_resolution="priority", call_timeout=1.5
    ) as running:
        handlers = Handlers(gate=asyncio.Event())  # never set: the client never answers
        async with asking_client(running.url, handlers) as client:
            with contextlib.suppress(MCPError):
                await asyncio.wait_for(client.call_tool("confirm", {"question": "anyone?"}), 10)
            await asyncio.wait_for(handlers.cancelled.wait(), 10)  # the client is told the request is over
            assert running.aggregator.backchannel.relayed.get("timeout") == 1
            assert running.aggregator.backchannel.book.waiting() == 0


async def _stats(client: Any, wanted: str) -> bool:
    return text(await client.call_tool("stats", {})) == wanted


async def test_a_backend_killed_mid_elicitation_fails_the_call_and_releases_the_client(
    serve: Callable[..., Any], asking: Asking
) -> None:
    proc, url = start_asking("doomed")
    try:
        catalog = await fetch_catalog(url)
        async with serve(
            [{"name": "doomed", "url": url}], catalogs={"doomed": catalog}, conflict_resolution="priority"
        ) as running:
            handlers = Handlers(gate=asyncio.Event())
            async with asking_client(running.url, handlers) as client:
                call = asyncio.ensure_future(client.call_tool("confirm", {"question": "wait"}))
                await asyncio.wait_for(handlers.entered.wait(), 10)
                proc.kill()
                with pytest.raises(MCPError) as info:
                    await asyncio.wait_for(call, 15)
                assert info.value.code == BACKEND_FAILED
                await asyncio.wait_for(handlers.cancelled.wait(), 10)  # the relayed request did not outlive its call
    finally:
        proc.stop()


async def test_progress_log_levels_and_list_changed(serve: Callable[..., Any], asking: Asking) -> None:
    async with serve(entries(asking), catalogs={"asking": asking.catalog}, conflict_resolution="priority") as running:
        handlers = Handlers()
        async with asking_client(running.url, handlers) as client:
            progress: list[float] = []

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                progress.append(value)

            result = await client.call_tool("count", {"n": 3}, progress_callback=on_progress)
            assert text(result) == "counted 3" and progress == [1.0, 2.0, 3.0]

            with warnings.catch_warnings():  # logging: deprecated at 2026-07-28, still the legacy family's
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                await client.set_logging_level("warning")
            assert text(await client.call_tool("chatty", {"n": 6})) == "logged 6"
            await async_wait_until(lambda: len(handlers.logs) >= 2, timeout=5, what="the warning lines")
            assert handlers.logs == ["warning:line 2", "warning:line 5"]

            assert text(await client.call_tool("grow", {})) == "grown_1"
            await async_wait_until(
                lambda: running.source.refreshes == ["asking"], timeout=5, what="a catalog refresh of the backend"
            )


async def test_elicitation_and_sampling_cross_envoy_for_two_clients(asking: Asking, tmp_path: Path) -> None:
    config = stack_config([{"name": "asking", "url": asking.url}], aggregator={"conflict_resolution": "priority"})
    async with through_envoy(config, {"asking": asking.catalog}, tmp_path) as path:
        one, two = Handlers(ok=True, model="one"), Handlers(ok=False, model="two")
        async with (
            asking_client(path.url, one) as c1,
            asking_client(path.url, two) as c2,
            asking_client(path.url, None) as bare,
        ):
            r1, r2, r3 = await asyncio.gather(
                c1.call_tool("confirm", {"question": "one?"}),
                c2.call_tool("confirm", {"question": "two?"}),
                bare.call_tool("confirm", {"question": "none?"}),
            )
            assert (text(r1), text(r2), text(r3)) == ("accept: True", "accept: False", "fallback: no elicitation")
            assert text(await c2.call_tool("summarize", {"text": "x"})) == "model two: re: x"
        assert (one.asked, two.asked) == (["one?"], ["two?", "x"])


async def test_a_modern_backends_input_required_is_asked_of_a_legacy_client(
    serve: Callable[..., Any], asking: Asking
) -> None:
    modern = await fetch_catalog(asking.url, mode="2026-07-28")
    entry = {"name": "asking", "url": asking.url, "protocol": "modern"}
    async with serve([entry], catalogs={"asking": modern}, conflict_resolution="priority") as running:
        handlers = Handlers(ok=True)
        async with asking_client(running.url, handlers) as client:
            assert text(await client.call_tool("confirm", {"question": "modern?"})) == "accept: True (modern)"
        assert handlers.asked == ["modern?"]
        async with asking_client(running.url, None) as client:  # a legacy client that cannot be asked: a clear error
            with pytest.raises(MCPError) as info:
                await client.call_tool("confirm", {"question": "modern?"})
            assert info.value.code == types.INVALID_REQUEST and "did not declare" in info.value.message
        async with mcp_client(running.url, "2026-07-28", elicitation_callback=handlers.elicit) as client:
            assert text(await client.call_tool("confirm", {"question": "passed?"})) == "accept: True (modern)"
        assert handlers.asked == ["modern?", "passed?"]  # a modern client answers the backend's own InputRequiredResult


@needs_servers
async def test_the_typescript_reference_server_asks_the_calling_client_through_envoy(tmp_path: Path) -> None:
    port = free_port()
    proc = start_everything(port)
    try:
        url = f"http://127.0.0.1:{port}/mcp"
        handlers = Handlers(roots=("file:///ts-root",), model="ts-model")
        seen: list[str] = []

        async def decline(ctx: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
            seen.append(params.message)
            return types.ElicitResult(action="decline")

        options = {**handlers.kwargs(), "elicitation_callback": decline}
        # server-everything registers these tools per session, for clients that declare the capability
        catalog = await fetch_catalog(url, **options)
        config = stack_config([{"name": "everything", "url": url}])
        async with through_envoy(config, {"everything": catalog}, tmp_path) as path:
            async with mcp_client(path.url, "legacy", **options) as client:
                result = await client.call_tool("everything_trigger-elicitation-request", {})
                assert "declined" in text(result) and seen == ["Please provide inputs for the following fields:"]
                result = await client.call_tool("everything_trigger-sampling-request", {"prompt": "hi"})
                assert "ts-model" in text(result) and handlers.asked == [
                    "Resource trigger-sampling-request context: hi"
                ]
                assert "file:///ts-root" in text(await client.call_tool("everything_get-roots-list", {}))
                # the client's roots change: the backend hears it and asks again, outside any call (standalone stream)
                handlers.roots = ("file:///second",)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await client.send_roots_list_changed()

                async def second_root() -> bool:
                    return "file:///second" in text(await client.call_tool("everything_get-roots-list", {}))

                await async_wait_until(second_root, timeout=10, what="the backend to re-read the client's roots")
                assert any("Roots updated" in line for line in handlers.logs)  # its log messages reach the client
                progress: list[float] = []

                async def on_progress(value: float, total: float | None, message: str | None) -> None:
                    progress.append(value)

                await client.call_tool(
                    "everything_trigger-long-running-operation", {"duration": 0.3, "steps": 3},
                    progress_callback=on_progress,
                )  # fmt: skip
                assert progress == [1, 2, 3]
            async with mcp_client(path.url, "legacy") as bare:  # no capability: the server has no such tool for it
                result = await asyncio.wait_for(
                    bare.call_tool("everything_trigger-sampling-request", {"prompt": "x"}), 10
                )
                assert result.is_error and "not found" in text(result)
    finally:
        proc.stop()


async def test_a_backends_list_changed_makes_the_control_plane_probe_it_at_once() -> None:
    proc, url = start_asking("growing")
    source: AdminViewSource | None = None
    try:
        # probes every 60 s and catalogs every 300 s: a new tool within the test's deadline is the refresh's doing
        config = stack_config(
            [{"name": "growing", "url": url, "protocol": "legacy"}],
            health={"interval": "60s", "catalog_refresh": "300s"},
            aggregator={"conflict_resolution": "priority"},
        )
        async with running_control_plane(config, health=True) as plane:
            source = AdminViewSource(config.control_plane.admin)
            aggregator = Aggregator(config, source, upstream_url=direct_upstream_url)
            async with aggregator.running():
                await async_wait_until(
                    lambda: aggregator.gateway.catalog.route("tools", "grow") is not None, timeout=30,
                    what="the first probe's catalog",
                )  # fmt: skip
                async with aggregator.serving(config.aggregator.address, config.aggregator.port) as endpoint:
                    async with mcp_client(endpoint, "legacy") as client:
                        assert text(await client.call_tool("grow", {})) == "grown_1"
                        await async_wait_until(
                            lambda: aggregator.gateway.catalog.route("tools", "grown_1") is not None, timeout=10,
                            what="the refreshed catalog",
                        )  # fmt: skip
                        assert text(await client.call_tool("grown_1", {})).startswith("cancelled=")
            assert plane.store.current.backend("growing") is not None
    finally:
        if source is not None:
            await source.aclose()
        proc.stop()


async def test_a_modern_backends_list_change_on_its_listen_stream_makes_the_control_plane_probe_it() -> None:
    port = free_port()
    proc = python_module(
        "examples.backends.demo_server", "--name", "modern", "--family", "modern", "--port", str(port), name="modern"
    )
    source: AdminViewSource | None = None
    try:
        proc.wait_for_line("READY", timeout=30)
        config = stack_config(
            [{"name": "modern", "url": f"http://127.0.0.1:{port}/mcp", "protocol": "modern"}],
            health={"interval": "60s", "catalog_refresh": "300s"},
            aggregator={"conflict_resolution": "priority"},
        )
        async with running_control_plane(config, health=True):
            source = AdminViewSource(config.control_plane.admin)
            aggregator = Aggregator(config, source, upstream_url=direct_upstream_url)
            async with aggregator.running():
                upstream = aggregator.gateway.upstreams["modern"]
                await async_wait_until(
                    lambda: upstream.listen is not None and upstream.listen.acknowledged.is_set(), timeout=30,
                    what="the aggregator's listen stream to the modern backend",
                )  # fmt: skip
                assert aggregator.gateway.catalog.route("tools", "dynamic_1") is None
                proc.signal(signal.SIGUSR1)  # the demo backend adds dynamic_1 and announces it on listen streams
                await async_wait_until(
                    lambda: aggregator.gateway.catalog.route("tools", "dynamic_1") is not None, timeout=10,
                    what="the refreshed catalog",
                )  # fmt: skip
    finally:
        if source is not None:
            await source.aclose()
        proc.signal(signal.SIGTERM)
        proc.stop()
