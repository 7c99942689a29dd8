"""Lists with the failure modes, fast failure and request validation, without sockets."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError
from prometheus_client import REGISTRY
from pytest import approx

from tests.aggregator.test_catalog import A, B, catalog, config, up
from tests.support.waiting import async_wait_until
from xds_control.aggregator import gateway as gateway_module
from xds_control.aggregator.catalog import merge_catalog
from xds_control.aggregator.gateway import UNAVAILABLE_META, Gateway
from xds_control.aggregator.http_app import allowed_hosts
from xds_control.aggregator.rpc_errors import BACKEND_UNAVAILABLE
from xds_control.config import Config, parse_config
from xds_control.errors import ConfigError
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog


def no_spawn(coro: Any) -> Any:
    coro.close()
    raise AssertionError("no backend session may be opened")


@pytest.fixture
async def make() -> AsyncIterator[Any]:
    made: list[Gateway] = []

    def build(cfg: Config, statuses: dict[str, BackendStatus], *, page_size: int = 100) -> Gateway:
        gateway = Gateway(cfg, lambda b: f"http://127.0.0.1:9/{b.name}", no_spawn, page_size=page_size)
        gateway.apply_view(1, statuses)
        made.append(gateway)
        return gateway

    yield build
    for gateway in made:
        await gateway.aclose()


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class TestFailureModes:
    def test_fail_refuses_lists_while_a_required_backend_is_down(self, make: Any) -> None:
        cfg = config("a", {"name": "b", "required": True}, failure_mode="fail")
        gateway = make(
            cfg, {"a": up("a", A), "b": up("b", B, state=BackendState.UNHEALTHY, retry_at=time.time() + 5.0)}
        )
        with pytest.raises(MCPError) as info:
            gateway.list_page("tools", None)
        assert info.value.code == BACKEND_UNAVAILABLE
        assert info.value.data == {
            "unavailable": [{"backend": "b", "state": "unhealthy", "retry_after": approx(5.0, abs=1)}]
        }
        assert "required backend unavailable: b (unhealthy)" in info.value.message

    def test_fail_refuses_lists_when_nothing_is_routable(self, make: Any) -> None:
        gateway = make(config("a", "b", failure_mode="fail"), {"a": up("a", A, state=BackendState.UNHEALTHY)})
        with pytest.raises(MCPError) as info:
            gateway.list_page("prompts", None)
        assert "no backend is routable" in info.value.message
        assert [u["backend"] for u in info.value.data["unavailable"]] == ["a", "b"]

    def test_fail_leaves_out_optional_backends_and_names_them(self, make: Any) -> None:
        gateway = make(config("a", "b", failure_mode="fail"), {"a": up("a", A), "b": up("b", B, drained=True)})
        result = gateway.list_page("tools", None)
        assert [t["name"] for t in result["tools"]] == ["a_echo", "a_add"]
        assert result["_meta"] == {UNAVAILABLE_META: [{"backend": "b", "state": "drained", "retry_after": None}]}

    def test_best_effort_never_fails_a_list(self, make: Any) -> None:
        cfg = config("a", {"name": "b", "required": True}, failure_mode="best_effort")
        gateway = make(
            cfg, {"a": up("a", A, state=BackendState.UNHEALTHY), "b": up("b", B, state=BackendState.UNAUTHENTICATED)}
        )
        result = gateway.list_page("tools", None)
        assert result["tools"] == []
        assert [(u["backend"], u["state"]) for u in result["_meta"][UNAVAILABLE_META]] == [
            ("a", "unhealthy"),
            ("b", "unauthenticated"),
        ]

    def test_all_routable_has_no_meta(self, make: Any) -> None:
        result = make(config("a", failure_mode="fail"), {"a": up("a", A)}).list_page("resources", None)
        assert result == {"resources": [], "resultType": "complete"}

    @pytest.mark.parametrize("mode", ["fail", "best_effort"])
    def test_no_backend_configured_is_an_empty_catalog_not_an_error(self, make: Any, mode: str) -> None:
        gateway = make(parse_config({"aggregator": {"failure_mode": mode}}), {})
        assert gateway.list_page("tools", None) == {"tools": [], "resultType": "complete"}


class TestPaging:
    def test_pages_and_a_stale_cursor(self, make: Any) -> None:
        big = Catalog.build(tools=[{"name": f"t{i}"} for i in range(150)])
        cfg = config("a")
        gateway = make(cfg, {"a": up("a", big)}, page_size=100)
        first = gateway.list_page("tools", None)
        second = gateway.list_page("tools", first["nextCursor"])
        assert len(first["tools"]) == 100 and len(second["tools"]) == 50 and "nextCursor" not in second
        gateway.apply_view(2, {"a": up("a", Catalog.build(tools=[{"name": "other"}]))})
        with pytest.raises(MCPError) as info:
            gateway.list_page("tools", first["nextCursor"])
        assert info.value.code == types.INVALID_PARAMS and info.value.data["reason"] == "stale"
        with pytest.raises(MCPError, match="invalid cursor"):
            gateway.list_page("tools", "garbage!")


class TestCalls:
    async def test_an_unroutable_backend_fails_fast_without_network(self, make: Any) -> None:
        gateway = make(
            config("a", "b"),
            {"a": up("a", A), "b": up("b", B, state=BackendState.UNHEALTHY, retry_at=time.time() + 2.5)},
        )
        before = sample("xds_control_aggregator_upstream_http_requests_total", {"backend": "b"})
        fast = sample("xds_control_aggregator_fast_failed_calls_total", {"backend": "b", "state": "unhealthy"})
        with pytest.raises(MCPError) as info:
            await gateway.call("tools/call", "tools", "b_slow", {"name": "b_slow", "arguments": {}}, client_key=None)
        assert info.value.code == BACKEND_UNAVAILABLE
        assert info.value.data == {"backend": "b", "state": "unhealthy", "retry_after": approx(2.5, abs=1)}
        assert sample("xds_control_aggregator_upstream_http_requests_total", {"backend": "b"}) == before
        assert (
            sample("xds_control_aggregator_fast_failed_calls_total", {"backend": "b", "state": "unhealthy"}) == fast + 1
        )

    async def test_the_retry_after_of_a_fast_failure_counts_down(self, make: Any) -> None:
        gateway = make(
            config("a", "b"), {"a": up("a", A), "b": up("b", B, breaker=BreakerState.OPEN, retry_at=time.time() + 30)}
        )

        async def retry_after() -> float:
            with pytest.raises(MCPError) as info:
                await gateway.call("tools/call", "tools", "b_slow", {"name": "b_slow"}, client_key=None)
            return info.value.data["retry_after"]

        first = await retry_after()
        assert 29.0 < first <= 30.0
        later = [first]

        async def lower() -> bool:
            later.append(await retry_after())
            return later[-1] < first

        await async_wait_until(lower, timeout=10, what="a lower retry_after on the same view")
        assert 0 < later[-1] < first and gateway.view_version == 1

    async def test_unknown_names_and_bad_arguments(self, make: Any) -> None:
        schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
        cat = Catalog.build(
            tools=[{"name": "count", "inputSchema": schema}, {"name": "odd", "inputSchema": {"type": 12}}]
        )
        gateway = make(config("a"), {"a": up("a", cat)})
        with pytest.raises(MCPError) as info:
            await gateway.call("tools/call", "tools", "nope", {"name": "nope"}, client_key=None)
        assert info.value.code == types.INVALID_PARAMS and info.value.message == "Unknown tool: nope"
        with pytest.raises(MCPError) as info:
            await gateway.call("resources/read", "resources", "x://y", {"uri": "x://y"}, client_key=None)
        assert info.value.code == -32002 and info.value.data == {"uri": "x://y"}
        with pytest.raises(MCPError) as info:
            params = {"name": "a_count", "arguments": {"n": "three"}}
            await gateway.call("tools/call", "tools", "a_count", params, client_key=None, arguments=params["arguments"])
        assert info.value.code == types.INVALID_PARAMS
        assert info.value.data == {
            "tool": "a_count",
            "errors": [{"path": "n", "message": "'three' is not of type 'integer'"}],
        }
        assert gateway.tool_schema("a_count") == schema and gateway.tool_schema("nope") is None
        assert gateway._validator("a_odd") is None  # an invalid schema is not enforced


class TestViewChanges:
    """`apply_view` merges only when a backend's routability or catalog changed; states are refreshed always."""

    @pytest.fixture
    def merges(self, monkeypatch: pytest.MonkeyPatch) -> list[int]:
        counted: list[int] = []
        real = gateway_module.merge_catalog

        def counting(cfg: Config, statuses: Any) -> Any:
            counted.append(1)
            return real(cfg, statuses)

        monkeypatch.setattr(gateway_module, "merge_catalog", counting)
        return counted

    async def test_a_change_that_keeps_routability_and_catalogs_does_not_merge(
        self, make: Any, merges: list[int]
    ) -> None:
        cfg = config("a", "b", failure_mode="best_effort")
        gateway = make(
            cfg, {"a": up("a", A), "b": up("b", B, state=BackendState.UNHEALTHY, retry_at=time.time() + 5.0)}
        )
        lists = gateway.catalog.lists
        gateway.apply_view(
            2,
            {
                "a": up("a", A, last_error="timeout"),
                "b": up("b", B, breaker=BreakerState.OPEN, retry_at=time.time() + 9.0),
            },
        )
        gateway.apply_view(
            3,
            {
                "a": up("a", A, state=BackendState.DEGRADED),
                "b": up("b", B, breaker=BreakerState.OPEN, retry_at=time.time() + 9.0),
            },
        )
        assert len(merges) == 1  # the first view only
        assert gateway.catalog.lists is lists and gateway.view_version == 3
        assert gateway.list_page("tools", None)["_meta"] == {
            UNAVAILABLE_META: [{"backend": "b", "state": "circuit_open", "retry_after": approx(9.0, abs=1)}]
        }
        with pytest.raises(MCPError) as info:
            await gateway.call("tools/call", "tools", "b_slow", {"name": "b_slow"}, client_key=None)
        assert info.value.data == {"backend": "b", "state": "circuit_open", "retry_after": approx(9.0, abs=1)}

    @pytest.mark.parametrize(
        "change",
        [
            {"b": up("b", B)},  # b turns routable
            {"a": up("a", A, drained=True)},  # a turns unroutable
            {"a": up("a", catalog(tools=["echo"]))},  # a's catalog changed
        ],
        ids=["routable", "unroutable", "catalog"],
    )
    def test_a_routability_or_catalog_change_merges(
        self, make: Any, merges: list[int], change: dict[str, BackendStatus]
    ) -> None:
        view = {"a": up("a", A), "b": up("b", B, state=BackendState.UNHEALTHY)}
        gateway = make(config("a", "b"), view)
        gateway.apply_view(2, {**view, **change})
        assert len(merges) == 2
        assert gateway.catalog == merge_catalog(config("a", "b"), {**view, **change})

    def test_a_catalog_without_a_hash_always_merges(self, make: Any, merges: list[int]) -> None:
        unhashed = BackendStatus(name="a", state=BackendState.HEALTHY, catalog=Catalog(tools=({"name": "x"},)))
        gateway = make(config("a"), {"a": unhashed})
        gateway.apply_view(2, {"a": unhashed})
        assert len(merges) == 2


def test_manual_conflicts_in_the_first_view_are_a_config_error() -> None:
    cfg = config("a", "b", conflict_resolution="manual")
    gateway = Gateway(cfg, lambda b: "http://127.0.0.1:9/mcp", no_spawn)
    with pytest.raises(ConfigError, match="backends.1.tools.rename"):
        gateway.apply_view(1, {"a": up("a", A), "b": up("b", B)})
    gateway.apply_view(1, {"a": up("a", A)})
    gateway.apply_view(2, {"a": up("a", A), "b": up("b", B)})  # later: left out and logged, not fatal
    assert [t["name"] for t in gateway.list_page("tools", None)["tools"]] == ["add", "slow"]


def test_allowed_hosts() -> None:
    cfg = parse_config(
        {
            "listener": {"address": "0.0.0.0", "port": 10000},
            "aggregator": {
                "address": "10.1.2.3",
                "port": 18080,
                "allowed_hosts": ["gw.example.com", "gw2:8443", "[::1]:9"],
            },
        }
    )
    assert allowed_hosts(cfg) == [
        "127.0.0.1:10000", "localhost:10000", "[::1]:10000",
        "10.1.2.3:18080", "127.0.0.1:18080", "localhost:18080", "[::1]:18080",
        "gw.example.com", "gw.example.com:*", "gw2:8443", "[::1]:9",
    ]  # fmt: skip


_ = catalog  # re-exported helpers
