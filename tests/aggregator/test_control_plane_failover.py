"""The aggregator's view across control planes: a list in failover order, one at a time, verdicts kept
over a fresh control plane's "unknown" (view_source.keep_verdicts, AdminViewSource)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.support.stack import running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_ports
from xds_control.aggregator.view_source import AdminViewSource, Backoff, ViewFollower, ViewUpdate, keep_verdicts
from xds_control.config import parse_config
from xds_control.view import BackendState, BackendStatus, EndpointStatus

URL = "http://127.0.0.1:9000/mcp"


def _status(state: BackendState, url: str = URL) -> BackendStatus:
    return BackendStatus("a", state=state, endpoints=(EndpointStatus(url, state=state),))


def test_a_fresh_control_planes_unknown_never_replaces_a_verdict() -> None:
    previous = {"a": _status(BackendState.UNHEALTHY), "b": _status(BackendState.HEALTHY)}
    update = ViewUpdate(1, {"a": _status(BackendState.UNKNOWN), "b": _status(BackendState.UNKNOWN)}, "cp-2")
    kept = keep_verdicts(previous, update)
    assert kept.backends == previous and kept.version == 1 and kept.origin == "cp-2"


def test_verdicts_of_the_new_control_plane_and_new_endpoints_are_taken_as_they_come() -> None:
    previous = {"a": _status(BackendState.HEALTHY), "b": _status(BackendState.HEALTHY)}
    update = ViewUpdate(
        2,
        {
            "a": _status(BackendState.UNHEALTHY),  # its own verdict: taken
            "b": _status(BackendState.UNKNOWN, "http://127.0.0.1:9999/mcp"),  # other endpoints: a config change
            "c": _status(BackendState.UNKNOWN),  # new backend
        },
    )
    assert keep_verdicts(previous, update) is update
    assert keep_verdicts(None, update) is update


def _config(admins: list[str], **sections):
    return stack_config(
        [{"name": "a", "url": URL}],
        aggregator={"control_plane_admin": admins},
        **sections,
    )


async def test_config_lists_of_control_planes_in_failover_order() -> None:
    config = _config(["127.0.0.1:1", "127.0.0.1:2"], envoy={"control_plane_address": ["127.0.0.1:3", "10.0.0.1:4"]})
    assert config.admin_dials() == ["127.0.0.1:1", "127.0.0.1:2"]
    assert config.admin_dial() == "127.0.0.1:1"
    assert config.xds_dials() == [("127.0.0.1", 3), ("10.0.0.1", 4)]
    single = stack_config(envoy={"control_plane_address": "cp:18000"}, aggregator={"control_plane_admin": "cp:18001"})
    assert single.xds_dials() == [("cp", 18000)] and single.admin_dials() == ["cp:18001"]
    for bad, field in (
        ([], "control_plane_admin"),
        (["a:1", "a:1"], "control_plane_admin"),
        (["nope"], "control_plane_admin"),
    ):
        with pytest.raises(Exception) as info:
            parse_config({"aggregator": {"control_plane_admin": bad}})
        assert f"aggregator.{field}" in str(info.value)


@pytest.mark.integration
async def test_the_aggregator_follows_one_control_plane_fails_over_and_stays(tmp_path) -> None:
    """Two control planes from one config (their own addresses); the view follower sticks to the first until it
    goes, moves to the second, keeps its verdicts over the second's unknown, and stays there when the first
    comes back."""
    p = free_ports(6)
    first = _config([f"127.0.0.1:{p[1]}", f"127.0.0.1:{p[4]}"])
    first = first.with_control_plane(xds=f"127.0.0.1:{p[0]}", admin=f"127.0.0.1:{p[1]}", metrics=f"127.0.0.1:{p[2]}")
    second = first.with_control_plane(xds=f"127.0.0.1:{p[3]}", admin=f"127.0.0.1:{p[4]}", metrics=f"127.0.0.1:{p[5]}")
    applied: list[ViewUpdate] = []
    source = AdminViewSource(first.admin_dials())
    follower = ViewFollower(source, applied.append, backoff=Backoff(base=0.01, cap=0.05))

    def last() -> ViewUpdate | None:
        return applied[-1] if applied else None

    task: asyncio.Task[None] | None = None
    try:
        async with running_control_plane(second) as plane_b:
            async with running_control_plane(first) as plane_a:
                task = asyncio.create_task(follower.run())
                plane_a.store.set_state("a", BackendState.UNHEALTHY)
                await async_wait_until(
                    lambda: (
                        (u := last()) and u.origin == first.control_plane.admin and u.backends["a"].state == "unhealthy"
                    ),
                    timeout=10,
                    what="the first control plane's verdict",
                )
            # the first is gone: the second (no verdict yet: unknown) takes over, and the verdict is kept
            await async_wait_until(
                lambda: (u := last()) and u.origin == second.control_plane.admin, timeout=10, what="failover"
            )
            failed_over = len(applied) - 1
            assert last().backends["a"].state == BackendState.UNHEALTHY
            assert plane_b.store.current.backends["a"].state == BackendState.UNKNOWN
            plane_b.store.set_state("a", BackendState.HEALTHY)
            await async_wait_until(
                lambda: last().backends["a"].state == BackendState.HEALTHY, timeout=10, what="the second's verdict"
            )
            # the first comes back: the follower stays where it is (no flapping between two views)
            async with running_control_plane(first) as plane_a:
                plane_a.store.set_state("a", BackendState.DEGRADED)
                plane_b.store.set_state("a", BackendState.UNHEALTHY)
                await async_wait_until(
                    lambda: last().backends["a"].state == BackendState.UNHEALTHY, timeout=10, what="still the second"
                )
                assert {u.origin for u in applied[failed_over:]} == {second.control_plane.admin}
                assert source.target == second.control_plane.admin
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await source.aclose()
