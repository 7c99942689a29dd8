"""Envoy's protobuf messages, as upb classes built from `envoy_wire_descriptors` (see envoy_wire_gen).

    message_class("envoy.config.cluster.v3.Cluster")   # a google.protobuf message class
    from_json(Cluster, {"name": "a", "connect_timeout": "2s"}) -> message   # protobuf's JSON mapping

The descriptors live in a private pool, so nothing else in the process (another library's Envoy protos)
can clash with them; `Any` fields resolve their `@type` in the same pool.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    empty_pb2,
    json_format,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.message import Message

from xds_control.xds.envoy_wire_descriptors import FILE_DESCRIPTOR_SET


@cache
def _pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2):
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    for file in descriptor_pb2.FileDescriptorSet.FromString(FILE_DESCRIPTOR_SET).file:
        pool.AddSerializedFile(file.SerializeToString())
    return pool


@cache
def message_class(full_name: str) -> type[Message]:
    """The message class for `full_name` (KeyError if the generated descriptors lack it)."""
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(full_name))


def from_json(cls: type[Message], spec: dict[str, Any]) -> Message:
    """`spec` (Envoy's JSON/YAML shape, snake_case names) as a `cls` message. Raises json_format.ParseError,
    whose text names the field path, on a field or value the schema rejects."""
    return json_format.ParseDict(spec, cls(), descriptor_pool=_pool())
