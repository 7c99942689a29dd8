"""Envoy resource dicts -> protobuf bytes, and DiscoveryResponse framing.

Resources are encoded once per change, with protobuf's JSON mapping onto the upb classes of
envoy_wire.py (descriptors generated from envoy-data-plane). DiscoveryResponses are framed by hand from the
cached bytes: a push concatenates pre-encoded `Any` fields and never re-encodes a resource that did not
change.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from xds_control.errors import XdsError
from xds_control.xds import typeurls as t
from xds_control.xds.envoy_wire import from_json, message_class


def message_type(type_url: str) -> type[Message]:
    """The message class of one of the four resource type URLs."""
    if type_url not in t.PUSH_ORDER:
        raise XdsError(f"unknown resource type {type_url}")
    return message_class(type_url.split("/", 1)[1])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field_bytes(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _field_str(number: int, text: str) -> bytes:
    return _field_bytes(number, text.encode()) if text else b""


def encode_message(type_url: str, spec: dict[str, Any]) -> bytes:
    """Encode one resource dict as its protobuf message bytes. Raises XdsError, naming the field, on a dict
    Envoy's schema rejects."""
    cls = message_type(type_url)
    try:
        return from_json(cls, spec).SerializeToString(deterministic=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        detail = str(exc).split("\n", 1)[0]  # protobuf appends every field name of the message on a second line
        raise XdsError(
            f"cannot encode {t.SHORT[type_url]} resource {spec.get('name') or spec.get('cluster_name')!r}: {detail}"
        ) from None


def any_field(type_url: str, message: bytes) -> bytes:
    """`DiscoveryResponse.resources` entry (field 2): an `Any` holding `message`."""
    return _field_bytes(2, _field_str(1, type_url) + _field_bytes(2, message))


def discovery_response(
    *, version: str, type_url: str, nonce: str, resources: list[bytes], control_plane: str = "xds-control"
) -> bytes:
    """A serialized `envoy.service.discovery.v3.DiscoveryResponse` from pre-encoded `any_field`s."""
    return b"".join(
        [
            _field_str(1, version),
            *resources,
            _field_str(4, type_url),
            _field_str(5, nonce),
            _field_bytes(6, _field_str(1, control_plane)),  # control_plane.identifier
        ]
    )
