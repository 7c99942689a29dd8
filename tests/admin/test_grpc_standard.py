"""What grpcurl relies on: server reflection and the standard grpc.health.v1 service."""

from __future__ import annotations

import asyncio

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from .conftest import Harness


def _reflect(target: str) -> tuple[set[str], list[str]]:
    """Blocking: the reflection client is synchronous, so it runs in a thread while the server runs on the loop."""
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        service = DescriptorPool(database).FindServiceByName("xds_control.admin.v1.Admin")
        return services, [m.name for m in service.methods]


async def test_reflection_lists_the_admin_service(harness: Harness) -> None:
    async with asyncio.timeout(10):
        services, methods = await asyncio.to_thread(_reflect, harness.target)
    assert "xds_control.admin.v1.Admin" in services
    assert "grpc.health.v1.Health" in services
    assert methods == [
        "ListBackends", "GetBackend", "Watch", "ProbeNow", "Drain", "Undrain", "ResetBreaker", "ListNodes", "ReportOutcomes",
    ]  # fmt: skip


async def test_health_check_answers_serving(harness: Harness) -> None:
    async with grpc.aio.insecure_channel(harness.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "xds_control.admin.v1.Admin"):
            response = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING
