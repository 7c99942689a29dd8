"""The merged catalog (pure): naming per strategy, conflicts, filters, resources, routes, hashes, order."""

from __future__ import annotations

import time
from typing import Any

import pytest

from xds_control.aggregator.catalog import BACKEND_META_KEY, Route, manual_conflict_issues, merge_catalog
from xds_control.config import Config, parse_config
from xds_control.view import BackendState, BackendStatus, BreakerState, Catalog


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "inputSchema": {"type": "object"}, **extra}


def catalog(
    tools: list[str] = (), resources: list[str] = (), templates: list[str] = (), prompts: list[str] = ()
) -> Catalog:
    return Catalog.build(
        tools=[tool(t) for t in tools],
        resources=[{"uri": u, "name": u.rsplit("/", 1)[-1]} for u in resources],
        resource_templates=[{"uriTemplate": t, "name": "tpl"} for t in templates],
        prompts=[{"name": p} for p in prompts],
        protocol_version="2025-11-25",
    )


def config(*backends: str | dict[str, Any], **aggregator: Any) -> Config:
    entries = [
        {"name": b, "url": f"http://127.0.0.1:{9000 + i}/mcp"}
        if isinstance(b, str)
        else {"url": f"http://127.0.0.1:{9000 + i}/mcp", **b}
        for i, b in enumerate(backends)
    ]
    return parse_config({"aggregator": aggregator, "backends": entries})


def up(name: str, cat: Catalog, **fields: Any) -> BackendStatus:
    return BackendStatus(name=name, catalog=cat, **{"state": BackendState.HEALTHY, **fields})


def names(merged: Any, kind: str = "tools") -> list[str]:
    key = {"tools": "name", "prompts": "name", "resources": "uri", "resource_templates": "uriTemplate"}[kind]
    return [item[key] for item in merged.lists[kind].items]


A = catalog(tools=["echo", "add"], prompts=["greet"])
B = catalog(tools=["echo", "slow"], prompts=["greet", "only_b"])


class TestPrefix:
    def test_every_tool_and_prompt_is_prefixed_and_routes_back(self) -> None:
        merged = merge_catalog(config("a", "b", prefix_format="{backend}__"), {"a": up("a", A), "b": up("b", B)})
        assert names(merged) == ["a__echo", "a__add", "b__echo", "b__slow"]
        assert names(merged, "prompts") == ["a__greet", "b__greet", "b__only_b"]
        assert merged.route("tools", "b__echo") == Route("b", "echo")
        assert merged.route("tools", "echo") is None
        assert merged.conflicts == ()

    def test_names_colliding_after_prefixing_keep_the_earlier_backend(self) -> None:
        cfg = config("a", "a-b", prefix_format="{backend}-")
        merged = merge_catalog(cfg, {"a": up("a", catalog(tools=["b-x"])), "a-b": up("a-b", catalog(tools=["x", "y"]))})
        assert names(merged) == ["a-b-x", "a-b-y"]
        assert merged.route("tools", "a-b-x") == Route("a", "b-x")
        [conflict] = merged.conflicts
        assert (conflict.name, conflict.rejected) == ("a-b-x", ("a-b",))


class TestPriority:
    def test_the_earlier_backend_keeps_the_bare_name(self) -> None:
        merged = merge_catalog(config("a", "b", conflict_resolution="priority"), {"a": up("a", A), "b": up("b", B)})
        assert names(merged) == ["echo", "add", "b_echo", "slow"]
        assert merged.route("tools", "echo") == Route("a", "echo")
        assert merged.route("tools", "b_echo") == Route("b", "echo")
        assert names(merged, "prompts") == ["greet", "b_greet", "only_b"]

    def test_the_next_backend_takes_the_bare_name_when_the_first_is_unroutable(self) -> None:
        statuses = {"a": up("a", A, state=BackendState.UNHEALTHY), "b": up("b", B)}
        merged = merge_catalog(config("a", "b", conflict_resolution="priority"), statuses)
        assert names(merged) == ["echo", "slow"]
        assert merged.route("tools", "echo") == Route("b", "echo")


class TestManual:
    def test_renames_settle_conflicts_and_other_names_stay_bare(self) -> None:
        cfg = config(
            "a",
            {"name": "b", "tools": {"rename": {"echo": "echo_b", "greet": "greet_b"}}},
            conflict_resolution="manual",
        )
        merged = merge_catalog(cfg, {"a": up("a", A), "b": up("b", B)})
        assert names(merged) == ["echo", "add", "echo_b", "slow"]
        assert merged.route("tools", "echo_b") == Route("b", "echo")
        assert names(merged, "prompts") == ["greet", "greet_b", "only_b"]
        assert merged.conflicts == () and manual_conflict_issues(cfg, merged.conflicts) == []

    def test_an_unresolved_conflict_leaves_out_every_claimant_and_is_a_config_issue(self) -> None:
        cfg = config("a", "b", conflict_resolution="manual")
        merged = merge_catalog(cfg, {"a": up("a", A), "b": up("b", B)})
        assert names(merged) == ["add", "slow"]
        assert merged.route("tools", "echo") is None
        assert {(c.kind, c.name, c.rejected) for c in merged.conflicts} == {
            ("tools", "echo", ("a", "b")),
            ("prompts", "greet", ("a", "b")),
        }
        issues = manual_conflict_issues(cfg, merged.conflicts)
        assert [i.path for i in issues] == ["backends.1.tools.rename", "backends.1.tools.rename"]
        assert "'a', 'b'" in issues[0].message

    def test_issues_only_in_manual_mode(self) -> None:
        merged = merge_catalog(config("a", "b"), {"a": up("a", A), "b": up("b", B)})
        assert manual_conflict_issues(config("a", "b"), merged.conflicts) == []


class TestFilters:
    def test_excluded_and_not_included_tools_have_no_route(self) -> None:
        cfg = config({"name": "a", "tools": {"include": ["e*", "a*"], "exclude": ["add"]}})
        merged = merge_catalog(cfg, {"a": up("a", A)})
        assert names(merged) == ["a_echo"]
        assert merged.route("tools", "a_add") is None
        assert merged.unavailable_owner("tools", "a_add") is None  # a routable backend: unknown, not unavailable

    def test_a_filtered_tool_is_not_named_as_belonging_to_an_unroutable_backend(self) -> None:
        cfg = config({"name": "a", "tools": {"exclude": ["add"]}}, prefix_format="{backend}.")
        merged = merge_catalog(cfg, {"a": up("a", A, state=BackendState.UNHEALTHY)})
        assert merged.shadow["tools"] == {"a.echo": "a"}

    def test_filters_apply_to_tools_only(self) -> None:
        cfg = config({"name": "a", "tools": {"include": ["nothing"]}})
        merged = merge_catalog(cfg, {"a": up("a", A)})
        assert names(merged) == [] and names(merged, "prompts") == ["a_greet"]


class TestResources:
    def test_unique_uris_are_unchanged_in_every_mode(self) -> None:
        statuses = {"a": up("a", catalog(resources=["a://x"])), "b": up("b", catalog(resources=["b://y"]))}
        for mode in ("prefix", "priority", "manual"):
            merged = merge_catalog(config("a", "b", conflict_resolution=mode), statuses)
            assert names(merged, "resources") == ["a://x", "b://y"]
            assert merged.route("resources", "b://y") == Route("b", "b://y")

    @pytest.mark.parametrize(
        ("mode", "expected"),
        [("prefix", ["a_s://x", "b_s://x"]), ("priority", ["s://x", "b_s://x"]), ("manual", [])],
    )
    def test_a_shared_uri_is_resolved_like_a_name(self, mode: str, expected: list[str]) -> None:
        statuses = {"a": up("a", catalog(resources=["s://x"])), "b": up("b", catalog(resources=["s://x"]))}
        merged = merge_catalog(config("a", "b", conflict_resolution=mode), statuses)
        assert names(merged, "resources") == expected
        if expected:
            assert merged.route("resources", expected[-1]) == Route("b", "s://x")

    def test_reads_match_templates_and_strip_the_prefix(self) -> None:
        statuses = {
            "a": up("a", catalog(templates=["t://{id}"])),
            "b": up("b", catalog(templates=["t://{id}", "u://{x}/y"])),
        }
        merged = merge_catalog(config("a", "b", conflict_resolution="priority"), statuses)
        assert names(merged, "resource_templates") == ["t://{id}", "b_t://{id}", "u://{x}/y"]
        assert merged.route("resources", "t://7") == Route("a", "t://7")
        assert merged.route("resources", "b_t://7") == Route("b", "t://7")
        assert merged.route("resources", "u://1/y") == Route("b", "u://1/y")
        assert merged.route("resources", "v://1") is None
        assert merged.route("resource_templates", "b_t://{id}") == Route("b", "t://{id}")


class TestAvailability:
    def test_unroutable_backends_are_left_out_and_named_with_their_effective_state(self) -> None:
        cfg = config("a", {"name": "b", "required": True}, "c", "d", "e")
        statuses = {
            "a": up("a", A),
            "b": up("b", B, state=BackendState.UNHEALTHY, retry_at=time.time() + 3.0),
            "c": up("c", A, drained=True),
            "d": up("d", A, breaker=BreakerState.OPEN),
        }
        merged = merge_catalog(cfg, statuses)
        assert names(merged) == ["a_echo", "a_add"]
        assert 2.0 < merged.unavailable[0].retry_after <= 3.0  # type: ignore[operator]
        assert [(u.backend, u.state, u.retry_after is not None, u.required) for u in merged.unavailable] == [
            ("b", "unhealthy", True, True),
            ("c", "drained", False, False),
            ("d", "circuit_open", False, False),
            ("e", "unknown", False, False),
        ]
        assert (merged.configured, merged.routable) == (5, 1)

    def test_names_of_unroutable_backends_point_at_them(self) -> None:
        cfg = config("a", "b", conflict_resolution="priority")
        merged = merge_catalog(cfg, {"a": up("a", A), "b": up("b", B, state=BackendState.UNAUTHENTICATED)})
        assert merged.unavailable_owner("tools", "slow").backend == "b"
        assert merged.unavailable_owner("tools", "b_echo").backend == "b"
        assert merged.unavailable_owner("tools", "echo") is None  # routable: a has it
        assert merged.unavailable_owner("tools", "b_anything").backend == "b"  # by prefix, no catalog needed
        assert merged.unavailable_owner("tools", "zzz") is None

    def test_a_backend_without_a_status_is_unknown(self) -> None:
        merged = merge_catalog(config("a"), {})
        assert merged.unavailable[0].state == "unknown" and merged.routable == 0


class TestListsAndHashes:
    def test_order_is_config_order_then_listing_order_and_items_name_their_backend(self) -> None:
        merged = merge_catalog(config("b", "a"), {"a": up("a", A), "b": up("b", B)})
        assert names(merged) == ["b_echo", "b_slow", "a_echo", "a_add"]
        assert merged.lists["tools"].items[0]["_meta"] == {BACKEND_META_KEY: "b"}
        assert merged.lists["tools"].items[0]["inputSchema"] == {"type": "object"}

    def test_hashes_are_stable_and_change_per_kind(self) -> None:
        cfg = config("a", "b")
        first = merge_catalog(cfg, {"a": up("a", A), "b": up("b", B)})
        again = merge_catalog(cfg, {"b": up("b", B), "a": up("a", A)})
        assert first.hashes == again.hashes
        changed_prompt = catalog(tools=["echo", "slow"], prompts=["greet"])
        other = merge_catalog(cfg, {"a": up("a", A), "b": up("b", changed_prompt)})
        assert other.hashes["tools"] == first.hashes["tools"]
        assert other.hashes["prompts"] != first.hashes["prompts"]
        down = merge_catalog(cfg, {"a": up("a", A), "b": up("b", B, state=BackendState.UNHEALTHY)})
        assert down.hashes["tools"] != first.hashes["tools"]

    def test_a_changed_item_or_filter_changes_the_hash(self) -> None:
        first = merge_catalog(config("a"), {"a": up("a", A)})
        described = Catalog.build(tools=[tool("echo", description="new"), tool("add")], prompts=["greet"])  # type: ignore[list-item]
        assert merge_catalog(config("a"), {"a": up("a", described)}).hashes["tools"] != first.hashes["tools"]
        filtered = merge_catalog(config({"name": "a", "tools": {"exclude": ["add"]}}), {"a": up("a", A)})
        assert filtered.hashes["tools"] != first.hashes["tools"]
        renamed = merge_catalog(config("a", prefix_format="{backend}-"), {"a": up("a", A)})
        assert renamed.hashes["tools"] != first.hashes["tools"]

    def test_malformed_and_repeated_items_are_skipped(self) -> None:
        odd = Catalog.build(
            tools=[tool("x"), {"description": "no name"}, tool("x", description="dup"), "junk", tool("")]
        )  # type: ignore[list-item]
        merged = merge_catalog(config("a"), {"a": up("a", odd)})
        assert names(merged) == ["a_x"]
        assert "description" not in merged.lists["tools"].items[0]

    def test_a_routable_backend_without_a_catalog_contributes_nothing(self) -> None:
        merged = merge_catalog(
            config("a", "b"), {"a": up("a", A), "b": BackendStatus(name="b", state=BackendState.HEALTHY)}
        )
        assert names(merged) == ["a_echo", "a_add"] and merged.unavailable == ()

    def test_four_thousand_tools_merge(self) -> None:
        big = Catalog.build(tools=[tool(f"t{i}") for i in range(2000)])
        merged = merge_catalog(config("a", "b", conflict_resolution="priority"), {"a": up("a", big), "b": up("b", big)})
        assert len(merged.lists["tools"].items) == 4000
        assert merged.route("tools", "b_t1999") == Route("b", "t1999")
