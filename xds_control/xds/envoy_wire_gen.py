"""Generate `envoy_wire_descriptors.py`: protobuf descriptors for the Envoy messages the control plane
encodes and decodes, derived from envoy-data-plane's betterproto2 classes.

    .venv/bin/python -m xds_control.xds.envoy_wire_gen     # rewrites envoy_wire_descriptors.py

Why: envoy-data-plane's pydantic message classes cost the control plane far more memory and encode time
than the same schema as protobuf descriptors loaded into upb (the `protobuf` runtime the admin API
already uses; figures in bench/RESULTS.md). envoy-data-plane (in the `test` extra) stays the source:
this module reads field numbers, types, oneofs, maps and enum names from its classes, for every message
reachable from the roots below (Any fields are not followed: the types the control plane packs into them
are roots too). Adding a type is one line in `ROOTS`, then a run of this module (docs/dev/xds.md). tests/xds/test_envoy_wire.py fails when the committed file is
stale, and checks the encoder's bytes against envoy-data-plane's own.
"""

from __future__ import annotations

import enum
import importlib
import re
import sys
from pathlib import Path
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2

OUTPUT = Path(__file__).with_name("envoy_wire_descriptors.py")
PREFIX = "envoy_data_plane."
WELL_KNOWN = {
    m.DESCRIPTOR.package + "." + name: m.DESCRIPTOR.name
    for m in (any_pb2, duration_pb2, empty_pb2, struct_pb2, timestamp_pb2, wrappers_pb2)
    for name in m.DESCRIPTOR.message_types_by_name
}
WELL_KNOWN_ENUMS = {name: struct_pb2.DESCRIPTOR.name for name in struct_pb2.DESCRIPTOR.enum_types_by_name}
ROOTS = (
    ("envoy.config.cluster.v3", "Cluster"),
    ("envoy.config.endpoint.v3", "ClusterLoadAssignment"),
    ("envoy.config.listener.v3", "Listener"),
    ("envoy.config.route.v3", "RouteConfiguration"),
    ("envoy.service.discovery.v3", "DiscoveryRequest"),
    ("envoy.extensions.filters.network.http_connection_manager.v3", "HttpConnectionManager"),
    ("envoy.extensions.filters.http.router.v3", "Router"),
    ("envoy.extensions.access_loggers.stream.v3", "StderrAccessLog"),
    ("envoy.extensions.filters.http.stateful_session.v3", "StatefulSession"),
    ("envoy.extensions.http.stateful_session.envelope.v3", "EnvelopeSessionState"),
    ("envoy.extensions.transport_sockets.tls.v3", "UpstreamTlsContext"),
    ("envoy.extensions.upstreams.http.v3", "HttpProtocolOptions"),
    ("envoy.extensions.retry.host.previous_hosts.v3", "PreviousHostsPredicate"),
    ("envoy.extensions.filters.http.jwt_authn.v3", "JwtAuthentication"),
    ("envoy.extensions.filters.http.rbac.v3", "Rbac"),
    ("envoy.extensions.filters.http.local_ratelimit.v3", "LocalRateLimit"),
    ("envoy.extensions.http.early_header_mutation.header_mutation.v3", "HeaderMutation"),
)
F = descriptor_pb2.FieldDescriptorProto
SCALARS = {
    "bool": F.TYPE_BOOL, "int32": F.TYPE_INT32, "int64": F.TYPE_INT64, "uint32": F.TYPE_UINT32, "uint64": F.TYPE_UINT64,
    "sint32": F.TYPE_SINT32, "sint64": F.TYPE_SINT64, "float": F.TYPE_FLOAT, "double": F.TYPE_DOUBLE,
    "fixed32": F.TYPE_FIXED32, "sfixed32": F.TYPE_SFIXED32, "fixed64": F.TYPE_FIXED64, "sfixed64": F.TYPE_SFIXED64,
    "string": F.TYPE_STRING, "bytes": F.TYPE_BYTES,
}  # fmt: skip


def _json_name(name: str) -> str:
    """protoc's default json_name: drop each underscore and upper-case the letter after it."""
    return re.sub(r"_(.)", lambda m: m.group(1).upper(), name).replace("_", "")


class _Schema:
    """Walks envoy-data-plane's classes from the roots and builds one FileDescriptorProto per package."""

    def __init__(self) -> None:
        from envoy_data_plane.message_pool import default_message_pool

        self._url_of = default_message_pool.type_to_url
        self._files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
        self._scopes: dict[str, Any] = {}  # full name -> the DescriptorProto (or file) that holds its children
        self._done: set[str] = set()
        self._enums: dict[type, str] = {}

    # -- names --------------------------------------------------------------------------------

    @staticmethod
    def _package(cls: type) -> str:
        assert cls.__module__.startswith(PREFIX), cls
        return cls.__module__[len(PREFIX) :]

    def _full_name(self, cls: type) -> str:
        return self._url_of[cls].split("/", 1)[1]

    def _file(self, package: str) -> descriptor_pb2.FileDescriptorProto:
        if package not in self._files:
            self._files[package] = descriptor_pb2.FileDescriptorProto(
                name=f"xds_control/envoy_wire/{package.replace('.', '/')}.proto", package=package, syntax="proto3"
            )
            self._scopes[package] = self._files[package]
        return self._files[package]

    def _scope(self, package: str, full_name: str) -> Any:
        """The DescriptorProto for `full_name` (made empty if new), creating parent shells on the way."""
        if full_name in self._scopes:
            return self._scopes[full_name]
        parent_name, _, short = full_name.rpartition(".")
        parent: Any = self._file(package) if parent_name == package else self._scope(package, parent_name)
        target = parent.message_type if parent_name == package else parent.nested_type
        self._scopes[full_name] = message = target.add(name=short)
        return message

    def _depend(self, package: str, dep: str) -> None:
        """The file of `package` imports the file named `dep` (not itself)."""
        file = self._file(package)
        if dep != file.name and dep not in file.dependency:
            file.dependency.append(dep)

    # -- enums --------------------------------------------------------------------------------

    def _enum(self, cls: type[enum.IntEnum]) -> str:
        """The full name of enum `cls`, nested in the message of its module whose Python name prefixes its own
        (betterproto2 flattens `Cluster.LbPolicy` to `ClusterLbPolicy`)."""
        if cls in self._enums:
            return self._enums[cls]
        package = self._package(cls)
        module = importlib.import_module(cls.__module__)
        parents = [
            name
            for name, value in vars(module).items()
            if isinstance(value, type)
            and value in self._url_of
            and cls.__name__.startswith(name)
            and name != cls.__name__
        ]
        if parents:
            owner = getattr(module, max(parents, key=len))
            scope_name = self._full_name(owner)
            holder = self._scope(package, scope_name).enum_type
            short = cls.__name__[len(owner.__name__) :]
        else:
            scope_name, holder, short = package, self._file(package).enum_type, cls.__name__
        renamed = cls.betterproto_value_to_renamed_proto_names()  # type: ignore[attr-defined]
        proto = holder.add(name=short)
        members = list(cls.__members__.items())
        for name, member in members:
            proto.value.add(name=renamed.get(int(member), name), number=int(member))
        if len({int(m) for _, m in members}) < len(members):
            proto.options.allow_alias = True
        self._enums[cls] = full = f"{scope_name}.{short}"
        return full

    # -- messages -----------------------------------------------------------------------------

    def message(self, cls: type) -> str:
        full = self._full_name(cls)
        if full in WELL_KNOWN or full in self._done:
            return full
        self._done.add(full)
        package = self._package(cls)
        proto = self._scope(package, full)
        meta = cls._betterproto  # type: ignore[attr-defined]
        oneofs: list[str] = []
        optional: list[Any] = []
        for name in meta.sorted_field_names:
            fm = meta.meta_by_field_name[name]
            field = proto.field.add(name=name, number=fm.number, json_name=_json_name(name))
            field.label = F.LABEL_REPEATED if fm.repeated or fm.proto_type == "map" else F.LABEL_OPTIONAL
            if fm.proto_type == "map":
                field.type = F.TYPE_MESSAGE
                entry_name = "".join(part[:1].upper() + part[1:] for part in name.split("_")) + "Entry"
                entry = proto.nested_type.add(name=entry_name)
                entry.options.map_entry = True
                key_meta, value_meta = fm.map_meta
                entry.field.add(
                    name="key", number=1, json_name="key", label=F.LABEL_OPTIONAL, type=SCALARS[key_meta.proto_type]
                )
                value = entry.field.add(name="value", number=2, json_name="value", label=F.LABEL_OPTIONAL)
                self._type(package, value, value_meta, meta.cls_by_field[f"{name}.value"])
                field.type_name = f".{full}.{entry_name}"
            else:
                self._type(package, field, fm, meta.cls_by_field[name])
            if fm.group:
                if fm.group not in oneofs:
                    oneofs.append(fm.group)
                    proto.oneof_decl.add(name=fm.group)
                field.oneof_index = oneofs.index(fm.group)
            elif fm.optional:
                field.proto3_optional = True
                optional.append(field)
        for field in optional:  # protoc puts synthetic oneofs after the real ones
            field.oneof_index = len(proto.oneof_decl)
            proto.oneof_decl.add(name=f"_{field.name}")
        return full

    def _type(self, package: str, field: Any, fm: Any, cls: Any) -> None:
        if fm.unwrap is not None:
            cls = fm.unwrap()
        if fm.proto_type in SCALARS and fm.unwrap is None:
            field.type = SCALARS[fm.proto_type]
        elif fm.proto_type == "enum" and self._package(cls) == "google.protobuf":  # NullValue: struct.proto's
            field.type = F.TYPE_ENUM
            field.type_name = f".google.protobuf.{cls.__name__}"
            self._depend(package, WELL_KNOWN_ENUMS[cls.__name__])
        elif fm.proto_type == "enum":
            field.type = F.TYPE_ENUM
            field.type_name = "." + self._enum(cls)
            self._depend(package, self._file(self._package(cls)).name)
        else:
            field.type = F.TYPE_MESSAGE
            target = self.message(cls)
            field.type_name = "." + target
            self._depend(package, WELL_KNOWN[target] if target in WELL_KNOWN else self._file(self._package(cls)).name)

    def file_set(self) -> descriptor_pb2.FileDescriptorSet:
        """Files in dependency order (upb needs each file's dependencies first)."""
        ordered: list[descriptor_pb2.FileDescriptorProto] = []
        by_name = {f.name: f for f in self._files.values()}

        def visit(file: descriptor_pb2.FileDescriptorProto, path: tuple[str, ...]) -> None:
            if file in ordered:
                return
            if file.name in path:
                raise SystemExit(f"import cycle between generated files: {' -> '.join(path)}")
            for dep in file.dependency:
                if dep in by_name:
                    visit(by_name[dep], (*path, file.name))
            ordered.append(file)

        for name in sorted(by_name):
            visit(by_name[name], ())
        return descriptor_pb2.FileDescriptorSet(file=ordered)


def build() -> descriptor_pb2.FileDescriptorSet:
    schema = _Schema()
    for package, name in ROOTS:
        schema.message(getattr(importlib.import_module(PREFIX + package), name))
    return schema.file_set()


def render(file_set: descriptor_pb2.FileDescriptorSet) -> str:
    data = file_set.SerializeToString(deterministic=True)
    lines = [data[i : i + 96] for i in range(0, len(data), 96)]
    body = "\n".join(f"    {chunk!r}" for chunk in lines)
    messages = sum(1 for _ in _walk(file_set))
    return (
        '"""Generated by `python -m xds_control.xds.envoy_wire_gen` from envoy-data-plane: do not edit.\n\n'
        f"A FileDescriptorSet of {len(file_set.file)} files, {messages} messages, for the roots in envoy_wire_gen.ROOTS.\n"
        '"""\n\n'
        f"FILE_DESCRIPTOR_SET = (\n{body}\n)\n"
    )


def _walk(file_set: descriptor_pb2.FileDescriptorSet) -> Any:
    stack = [m for f in file_set.file for m in f.message_type]
    while stack:
        message = stack.pop()
        yield message
        stack.extend(message.nested_type)


def main() -> int:
    OUTPUT.write_text(render(build()))
    print(f"wrote {OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
