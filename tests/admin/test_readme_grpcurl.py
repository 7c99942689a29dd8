"""The README's grpcurl commands, run grpcurl-style against real control planes.

grpcurl is not installed here, so `grpcurl()` below does what it does for the
commands the README uses, from server reflection alone (never the generated
admin_pb2): `list`, `describe SYMBOL`, and `SERVICE/METHOD` with `-d JSON` and
`-H "key: value"`. The request JSON is parsed strictly (an unknown field fails),
so a README that drifts from the proto fails here.

The README's addresses are mapped to two control planes: `127.0.0.1:18001` (the
default admin address) to one bound to loopback, whose mutating calls need the
token of its cookie file (the README reads it into `$ADMIN_TOKEN`), and the
compose stack's admin address to one bound to 0.0.0.0 with
`admin_token_env: XDS_CONTROL_ADMIN_TOKEN`, as in compose/config.yaml, where
mutating calls need the README's `authorization` header.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shlex
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.message_factory import GetMessageClass
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from tests.support.procs import ROOT, Proc, demo_backend
from tests.support.stack import running_control_plane, stack_config
from tests.support.waiting import async_wait_until, free_port
from xds_control.config import Config, ControlPlaneConfig
from xds_control.controlplane import ControlPlane
from xds_control.view import BackendState

pytestmark = pytest.mark.integration

README = ROOT / "README.md"
COMPOSE_CONFIG = ROOT / "compose" / "config.yaml"
TOKEN_ENV = "XDS_CONTROL_ADMIN_TOKEN"  # what README and compose/config.yaml use
COOKIE_TOKEN_ENV = "ADMIN_TOKEN"  # the README reads the loopback plane's cookie into it
CALL_TIMEOUT = 10.0
SERVICES = {"xds_control.admin.v1.Admin", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}


# -- the README ---------------------------------------------------------------------------------


def admin_section(text: str) -> str:
    _, found, rest = text.partition("\n## Admin API\n")
    assert found, "README.md has no '## Admin API' section"
    return rest.split("\n## ", 1)[0]


def readme_commands(text: str) -> list[str]:
    """Every grpcurl command in the Admin API section's sh blocks, backslash continuations joined."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", admin_section(text), re.S | re.M):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip().startswith("grpcurl ")]
    return commands


@dataclass(frozen=True)
class Grpcurl:
    """One grpcurl command line, parsed the way grpcurl parses the flags the README uses."""

    text: str
    plaintext: bool
    data: str | None
    headers: tuple[tuple[str, str], ...]
    address: str
    verb: str  # "list" | "describe" | "call"
    symbol: str | None

    @classmethod
    def parse(cls, text: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> Grpcurl:
        argv = shlex.split(text)
        assert argv[0] == "grpcurl", text
        plaintext, data, headers = False, None, []
        args = iter(argv[1:])
        positional = []
        for arg in args:
            if arg == "-plaintext":
                plaintext = True
            elif arg == "-d":
                data = next(args)
            elif arg == "-H":
                key, sep, value = _expand(next(args), environ).partition(":")
                assert sep, f"-H needs 'key: value': {text}"
                headers.append((key.strip().lower(), value.strip()))  # gRPC metadata keys are lower case
            elif arg.startswith("-"):
                raise AssertionError(f"flag {arg} is not supported by this grpcurl stand-in: {text}")
            else:
                positional.append(arg)
        assert positional, f"no address: {text}"
        address, rest = positional[0], positional[1:]
        if rest and rest[0] in ("list", "describe"):
            assert len(rest) <= 2, text
            verb, symbol = rest[0], (rest[1] if len(rest) == 2 else None)
            assert verb == "list" or symbol, f"describe needs a symbol here: {text}"
        else:
            assert len(rest) == 1 and "/" in rest[0], f"expected list, describe or SERVICE/METHOD: {text}"
            verb, symbol = "call", rest[0]
        return cls(text, plaintext, data, tuple(headers), address, verb, symbol)


def _expand(value: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """$NAME and ${NAME} as the shell expands them inside double quotes; an unset variable fails."""

    def lookup(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in environ, f"${name} is not set"
        return environ[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lookup, value)


# -- grpcurl, from reflection -------------------------------------------------------------------


def grpcurl(cmd: Grpcurl, target: str) -> str:
    """What grpcurl prints for `cmd` against `target` (blocking). A non-OK status raises grpc.RpcError."""
    assert cmd.plaintext, f"the server speaks plaintext gRPC; grpcurl needs -plaintext for it: {cmd.text}"
    with grpc.insecure_channel(target) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        pool = DescriptorPool(database)
        if cmd.verb == "list":
            if cmd.symbol is None:
                return "\n".join(sorted(database.get_services()))
            return "\n".join(m.full_name for m in pool.FindServiceByName(cmd.symbol).methods)
        if cmd.verb == "describe":
            return describe(pool, cmd.symbol or "")
        service_name, _, method_name = (cmd.symbol or "").rpartition("/")
        service = pool.FindServiceByName(service_name)  # KeyError: not served
        method = service.methods_by_name[method_name]  # KeyError: no such method
        request_class, response_class = GetMessageClass(method.input_type), GetMessageClass(method.output_type)
        request = json_format.Parse(cmd.data or "{}", request_class())  # unknown fields raise ParseError
        path = f"/{service.full_name}/{method.name}"
        assert not method.client_streaming, f"client streaming is not supported here: {cmd.text}"
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            call = stream(request, metadata=cmd.headers, timeout=CALL_TIMEOUT)
            try:
                response = next(call)  # the first message (grpcurl would print every one until the stream ends)
            finally:
                call.cancel()
        else:
            unary = channel.unary_unary(
                path,
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )
            response = unary(request, metadata=cmd.headers, timeout=CALL_TIMEOUT)
        return json_format.MessageToJson(response, preserving_proto_field_name=True)


def describe(pool: DescriptorPool, symbol: str) -> str:
    """grpcurl's describe resolves a service, message, enum or method; a symbol that resolves to none fails."""
    for find in (pool.FindServiceByName, pool.FindMessageTypeByName, pool.FindEnumTypeByName, pool.FindMethodByName):
        try:
            descriptor = find(symbol)
        except KeyError:
            continue
        lines = [f"{symbol} is a {type(descriptor).__name__}"]
        for method in getattr(descriptor, "methods", ()):
            stream = "stream " if method.server_streaming else ""
            lines.append(
                f"  rpc {method.name} ( .{method.input_type.full_name} ) returns ( {stream}.{method.output_type.full_name} );"
            )
        return "\n".join(lines)
    raise AssertionError(f"{symbol} does not resolve through reflection")


# -- the control planes -------------------------------------------------------------------------


@dataclass
class Planes:
    loopback: ControlPlane  # bound to 127.0.0.1: mutating calls need its cookie's token
    remote: ControlPlane  # bound to 0.0.0.0 with a token: mutating calls need it

    def target_for(self, address: str) -> tuple[ControlPlane, str]:
        """The plane and dial target standing in for a README address."""
        if address == ControlPlaneConfig().admin:
            plane = self.loopback
        else:
            assert address == compose_admin_address(), (
                f"{address}: README addresses are the default admin address {ControlPlaneConfig().admin} "
                f"or the compose stack's {compose_admin_address()}"
            )
            plane = self.remote
        return plane, f"127.0.0.1:{plane.admin.port}"


def compose_admin_address() -> str:
    """How containers on the compose network reach the admin API (compose/config.yaml)."""
    return yaml.safe_load(COMPOSE_CONFIG.read_text())["aggregator"]["control_plane_admin"]


@pytest.fixture
def weather() -> Iterator[Proc]:
    proc = demo_backend("weather", free_port())
    try:
        yield proc
    finally:
        proc.stop()


def backend_url(proc: Proc) -> str:
    return proc.wait_for_line("READY").split()[-1]


def plane_config(url: str, **control_plane: Any) -> Config:
    return stack_config([{"name": "weather", "url": url}], health={"interval": "200ms"}, control_plane=control_plane)


@pytest.fixture
async def planes(weather: Proc, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Planes]:
    """The remote plane runs no health monitor: the README sends it only Drain. Each config's ports are
    picked just before its plane binds them (a free port stays free only so long)."""
    monkeypatch.setenv(TOKEN_ENV, secrets.token_hex(16))
    url = backend_url(weather)
    async with running_control_plane(plane_config(url), health=True) as loopback:
        remote_config = plane_config(url, admin=f"0.0.0.0:{free_port('0.0.0.0')}", admin_token_env=TOKEN_ENV)
        async with running_control_plane(remote_config) as remote:
            assert loopback.admin.cookie is not None and remote.admin.cookie is None
            monkeypatch.setenv(COOKIE_TOKEN_ENV, loopback.admin.cookie.read_text().strip())
            await async_wait_until(
                lambda: loopback.store.current.backends["weather"].state is BackendState.HEALTHY,
                timeout=20,
                what="weather healthy",
            )
            yield Planes(loopback, remote)


# -- the tests ----------------------------------------------------------------------------------


def test_the_readme_block_has_the_grpcurl_commands() -> None:
    text = README.read_text()
    commands = readme_commands(text)
    written = len(re.findall(r"^grpcurl ", admin_section(text), re.M))
    assert written and len(commands) == written
    assert all(not c.endswith("\\") and "\n" not in c for c in commands)
    parsed = [Grpcurl.parse(c, {TOKEN_ENV: "t", COOKIE_TOKEN_ENV: "c"}) for c in commands]
    assert {p.verb for p in parsed} == {"list", "describe", "call"}
    assert any(p.headers for p in parsed), "the token example"


def test_the_readme_rpc_table_matches_the_service() -> None:
    """Every RPC the README's table names exists, and every RPC of the service is in the table."""
    from xds_control.admin.v1 import admin_pb2  # the served proto; the grpcurl test below uses reflection only

    rows = re.findall(r"^\| (`.+?`) \|", admin_section(README.read_text()), re.M)
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row)}
    assert named == set(admin_pb2.DESCRIPTOR.services_by_name["Admin"].methods_by_name)


async def test_every_readme_grpcurl_command_works(planes: Planes) -> None:
    failures = []
    for text in readme_commands(README.read_text()):
        cmd = Grpcurl.parse(text)
        plane, target = planes.target_for(cmd.address)
        try:
            output = await asyncio.to_thread(grpcurl, cmd, target)
            check(cmd, output, plane)
        except (AssertionError, KeyError, json_format.ParseError, grpc.RpcError) as exc:
            failures.append(f"{text}\n    -> {exc!r}")
    assert not failures, "README grpcurl commands that fail:\n" + "\n".join(failures)


def check(cmd: Grpcurl, output: str, plane: ControlPlane) -> None:
    """What each README command's answer must show, beyond an OK status."""
    if cmd.verb == "list":
        assert set(output.splitlines()) >= SERVICES, output
        return
    if cmd.verb == "describe":
        assert " is a " in output, output
        return
    request = json.loads(cmd.data or "{}")
    answer = json.loads(output)
    service, _, method = (cmd.symbol or "").rpartition("/")
    if service == "grpc.health.v1.Health":
        assert answer == {"status": "SERVING"}, output
        return
    assert service == "xds_control.admin.v1.Admin", cmd.text
    backends = answer.get("backends") or ([answer["backend"]] if "backend" in answer else [])
    if method in ("ListBackends", "Watch"):
        assert [b["name"] for b in backends] == ["weather"], output
        assert all(b.get("tool_count") == 3 for b in backends), output
        has_catalog = [bool(b.get("catalog_json")) for b in backends]
        assert has_catalog == [not request.get("omit_catalogs", False)], output
    elif "name" in request:
        assert [b["name"] for b in backends] == [request["name"]], output
    if method == "ProbeNow":
        assert backends[0]["state"] == "BACKEND_STATE_HEALTHY", output
    if method == "Drain":
        assert backends[0].get("drained") is True and not backends[0].get("routable", False), output
        assert plane.store.current.backends[request["name"]].drained


async def test_the_token_example_needs_its_header(planes: Planes) -> None:
    """The README's Drain against the off-loopback plane: refused without the header, and with a wrong token."""
    commands = [Grpcurl.parse(c) for c in readme_commands(README.read_text()) if Grpcurl.parse(c).headers]
    assert {planes.target_for(c.address)[0] for c in commands} == {planes.remote, planes.loopback}
    for cmd in commands:
        plane, target = planes.target_for(cmd.address)
        for headers in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as info:
                await asyncio.to_thread(grpcurl, replace(cmd, headers=headers), target)
            assert info.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert not plane.store.current.backends["weather"].drained


async def test_the_stand_in_fails_where_grpcurl_would() -> None:
    """README drift must fail: an unknown JSON field, method, service, symbol or flag, and a non-OK status."""
    async with running_control_plane(stack_config([{"name": "weather", "url": "http://127.0.0.1:9/mcp"}])) as plane:
        target = f"127.0.0.1:{plane.admin.port}"
        admin = "127.0.0.1:18001 xds_control.admin.v1.Admin"

        def run(text: str) -> str:
            return grpcurl(Grpcurl.parse(text), target)

        assert (
            json.loads(
                await asyncio.to_thread(run, f'grpcurl -plaintext -d \'{{"name": "weather"}}\' {admin}/GetBackend')
            )["backend"]["name"]
            == "weather"
        )
        with pytest.raises(json_format.ParseError, match="nam"):
            await asyncio.to_thread(run, f'grpcurl -plaintext -d \'{{"nam": "weather"}}\' {admin}/GetBackend')
        with pytest.raises(json_format.ParseError):
            await asyncio.to_thread(
                run, f'grpcurl -plaintext -d \'{{"omit_catalogs": "yes please"}}\' {admin}/ListBackends'
            )
        with pytest.raises(KeyError):
            await asyncio.to_thread(run, f"grpcurl -plaintext {admin}/ListBackend")
        with pytest.raises(KeyError):
            await asyncio.to_thread(run, "grpcurl -plaintext 127.0.0.1:18001 xds_control.admin.v2.Admin/ListBackends")
        with pytest.raises(AssertionError, match="does not resolve"):
            await asyncio.to_thread(run, "grpcurl -plaintext 127.0.0.1:18001 describe xds_control.admin.v1.Admn")
        with pytest.raises(AssertionError, match="not supported"):
            await asyncio.to_thread(run, f"grpcurl -plaintext -max-time 3 {admin}/ListBackends")
        with pytest.raises(AssertionError, match="-plaintext"):
            await asyncio.to_thread(run, f"grpcurl {admin}/ListBackends")
        with pytest.raises(grpc.RpcError) as info:
            await asyncio.to_thread(run, f'grpcurl -plaintext -d \'{{"name": "nope"}}\' {admin}/GetBackend')
        assert info.value.code() is grpc.StatusCode.NOT_FOUND
        token = plane.admin.cookie.read_text().strip()
        with pytest.raises(grpc.RpcError) as info:  # loopback plane without health: ProbeNow is not served
            await asyncio.to_thread(
                run,
                f'grpcurl -plaintext -H "authorization: Bearer {token}" -d \'{{"name": "weather"}}\' {admin}/ProbeNow',
            )
        assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
        with pytest.raises(AssertionError, match="is not set"):
            Grpcurl.parse('grpcurl -plaintext -H "authorization: Bearer $NOT_SET_ANYWHERE" 127.0.0.1:18001 x/y', {})


def test_readme_addresses_are_known() -> None:
    """Addresses other than the default and the compose stack's fail instead of being guessed."""
    planes = Planes(loopback=None, remote=None)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="README addresses"):
        planes.target_for("gateway.example:18001")
    with pytest.raises(AssertionError, match="README addresses"):
        planes.target_for("127.0.0.1:18002")
