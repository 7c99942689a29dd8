"""Attacks on the control plane's admin gRPC API."""

from __future__ import annotations

import time

import grpc

from tests.hostile.support import Finding, HostileStack, Scale, StackSpec, attack
from xds_control.admin.v1 import admin_pb2 as pb
from xds_control.admin.v1 import admin_pb2_grpc as pb_grpc

MAX_U32 = 2**32 - 1


def _status(exc: grpc.RpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


@attack(
    "admin-report-outcomes",
    surface="admin ReportOutcomes (failures=2^32-1) and Drain from a local process, with and without the token",
    stack=StackSpec(backends=("weather", "victim")),
)
async def report_outcomes(stack: HostileStack, scale: Scale) -> Finding:
    """Without the token the call is refused; with it (a compromised holder) 2^32-1 failures cost O(1)."""
    calls = scale.pick(20, 200)
    request = pb.ReportOutcomesRequest(outcomes=[pb.BackendOutcome(backend="victim", failures=MAX_U32)])
    async with grpc.aio.insecure_channel(stack.admin_target) as channel:
        stub = pb_grpc.AdminStub(channel)
        refused = ""
        try:
            await stub.ReportOutcomes(request, timeout=30)
        except grpc.RpcError as exc:
            refused = _status(exc)
        drain_refused = ""
        try:
            await stub.Drain(pb.DrainRequest(name="weather"), timeout=30)
        except grpc.RpcError as exc:
            drain_refused = _status(exc)
        token = stack.admin_token()
        metadata = (("authorization", f"Bearer {token}"),) if token else None
        started = time.monotonic()
        for _ in range(calls):
            await stub.ReportOutcomes(request, timeout=30, metadata=metadata)
        took = time.monotonic() - started
        victim = (await stub.GetBackend(pb.GetBackendRequest(name="victim"), timeout=10)).backend
    return Finding(
        refused or "accepted without a token",
        {
            "refused": bool(refused),
            "drain_refused": "UNAUTHENTICATED" in drain_refused,
            "calls": calls,
            "seconds": round(took, 3),
            "victim_routable": victim.routable,
        },
    )
