"""Attacks on the control plane's ADS port, with a real Envoy connected alongside as the legitimate client."""

from __future__ import annotations

import asyncio
import json
import random

import grpc

from tests.hostile import ads
from tests.hostile.support import Finding, HostileStack, Scale, StackSpec, attack
from xds_control.xds import typeurls as t
from xds_control.xds.server import MAX_REQUEST_BYTES, MAX_STALE_STREAK

WITH_ENVOY = StackSpec(envoy=True)


async def _status(call: grpc.aio.StreamStreamCall, timeout: float = 20.0) -> str:
    """The stream's final status, reading (and dropping) what it was sent first: gRPC delivers the status
    only after every message before it."""

    async def drain() -> grpc.StatusCode:
        try:
            while await call.read() is not grpc.aio.EOF:
                pass
        except grpc.aio.AioRpcError:
            pass
        return await call.code()

    try:
        code = await asyncio.wait_for(drain(), timeout)
    except TimeoutError:
        return "still open"
    return f"{code.name}: {await call.details()}"


@attack(
    "ads-never-read-guessed-nonces",
    surface="ADS: streams that ACK and re-request guessed nonces and never read",
    stack=WITH_ENVOY,
)
async def never_read(stack: HostileStack, scale: Scale) -> Finding:
    streams, per_stream = scale.pick((4, 3000), (8, 30000))
    async with ads.channel(stack.xds_target) as channel:
        calls = [ads.open_stream(channel) for _ in range(streams)]

        async def flood(call: grpc.aio.StreamStreamCall, n: int) -> int:
            await call.write(ads.request(t.CLUSTER, node=f"attacker-{n}"))
            sent = 0
            for i in range(per_stream):  # the old global counter's next values, and random ones
                nonce = str(i) if i % 2 else str(random.randrange(1 << 32))
                if call.done():
                    break
                try:
                    await asyncio.wait_for(call.write(ads.request(t.CLUSTER, nonce=nonce, version="1")), 10)
                except (grpc.aio.AioRpcError, grpc.aio.UsageError, asyncio.InvalidStateError, TimeoutError):
                    break
                sent += 1
            return sent

        sent = await asyncio.gather(*(flood(call, n) for n, call in enumerate(calls)))
        # One more that stops writing once it has sent a streak, so its status is the server's, not its own
        # write racing the close (a flooding client's core reports that as INTERNAL).
        probe = ads.open_stream(channel)
        await probe.write(ads.request(t.CLUSTER, node="attacker-probe"))
        for i in range(MAX_STALE_STREAK + 1):
            await probe.write(ads.request(t.CLUSTER, nonce=str(i), version="1"))
        told = await _status(probe)
        follow = await asyncio.to_thread(stack.envoy_follows_a_change)
        for call in calls:
            call.cancel()
    refused = stack.log().count("ADS stream refused")
    return Finding(
        told,
        {
            "streams": streams,
            "requests_sent": sum(sent),
            "streams_refused": refused,
            "envoy_followed_s": round(follow, 2),
        },
    )


@attack(
    "ads-nack-huge-detail",
    surface="ADS: streams NACKing with a 1 MB error_detail (the request bound) and one with 60 MB",
    stack=WITH_ENVOY,
)
async def nack_huge(stack: HostileStack, scale: Scale) -> Finding:
    streams = scale.pick(4, 8)
    detail = "\x1b[2J" + "x" * (MAX_REQUEST_BYTES - 16384)
    async with ads.channel(stack.xds_target) as channel:
        calls = [ads.open_stream(channel) for _ in range(streams)]
        for n, call in enumerate(calls):
            await call.write(ads.request(t.CLUSTER, node=f"nacker-{n}"))
            first = ads.response(await asyncio.wait_for(call.read(), 20))
            await call.write(ads.request(t.CLUSTER, node=f"nacker-{n}", nonce=first.nonce, error=detail))
        huge = ads.open_stream(channel)
        await huge.write(ads.request(t.CLUSTER, node="nacker-huge", error="y" * 60_000_000))
        refused = await _status(huge)
        follow = await asyncio.to_thread(stack.envoy_follows_a_change)
        listing = await asyncio.to_thread(admin_nodes_json, stack)
        for call in calls:
            call.cancel()
    longest_line = max((len(line) for line in stack.log().splitlines()), default=0)
    return Finding(
        refused,
        {
            "streams": streams,
            "admin_nodes_json_bytes": len(listing),
            "longest_log_line": longest_line,
            "raw_escape_in_log": "\x1b" in stack.log(),
            "envoy_followed_s": round(follow, 2),
        },
    )


def admin_nodes_json(stack: HostileStack) -> str:
    """What `xds-control admin nodes --json` prints."""
    import subprocess
    import sys

    from tests.support.procs import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "xds_control.cli", "admin", "nodes", "--json", "-c", str(stack.config_path)],
        capture_output=True,
        text=True,
        cwd=str(ROOT),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    return done.stdout


@attack(
    "ads-malformed",
    surface="ADS: malformed protobuf, and node ids with control and bidi characters",
    stack=WITH_ENVOY,
)
async def malformed(stack: HostileStack, scale: Scale) -> Finding:
    streams = scale.pick(20, 200)
    statuses: list[str] = []
    async with ads.channel(stack.xds_target) as channel:
        for n in range(streams):
            call = ads.open_stream(channel)
            await call.write(bytes([0xFF, 0xFF, n % 256]) + b"\x00garbage" * 10)
            statuses.append(await _status(call))
        named = []
        for n in range(streams):
            call = ads.open_stream(channel)
            await call.write(ads.request(t.CLUSTER, node=f"evil-{n}\x1b[31m\r\nFAKE LOG LINE\u202e\x00" + "z" * 10_000))
            await asyncio.wait_for(call.read(), 20)
            named.append(call)
        follow = await asyncio.to_thread(stack.envoy_follows_a_change)
        for call in named:
            call.cancel()
    log = stack.log()
    return Finding(
        statuses[0],
        {
            "all_invalid_argument": all(s.startswith("INVALID_ARGUMENT") for s in statuses),
            "exception_group_to_peer": any("Group" in s for s in statuses),
            "traceback_in_log": "Traceback" in log,
            "raw_control_in_log": any(c in log for c in ("\x1b", "\u202e", "\x00")),
            "fake_log_line": any(line.startswith("FAKE LOG LINE") for line in log.splitlines()),
            "envoy_followed_s": round(follow, 2),
        },
    )
