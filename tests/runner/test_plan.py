"""The pure decisions of `xds-control up`: what starts, in which order, when it is ready, what an exit means."""

from __future__ import annotations

import re
import signal

import pytest

from xds_control.cli import main
from xds_control.config import parse_config
from xds_control.runner import plan
from xds_control.runner.plan import ChildSpec, HttpReady, LineReady, Phase, Role, TcpReady, on_child_exit

PORTS = {"listener": 20000, "egress": 20001, "envoy_admin": 20002, "xds": 20003, "admin": 20004, "metrics": 20005,
         "aggregator": 20006, "aggregator_metrics": 20007}  # fmt: skip


def stack(config=None, *, aggregator_available=True) -> plan.StackPlan:
    return plan.plan_stack(
        config or parse_config({}),
        config_path="/etc/xds/config.yaml",
        bootstrap_path="/run/xds/bootstrap.yaml",
        envoy_binary="/opt/envoy",
        python="/venv/bin/python",
        log_level="warning",
        aggregator_available=aggregator_available,
    )


def test_control_plane_starts_alone_first_then_envoy_and_aggregator_together():
    stages = stack().stages
    assert [[c.name for c in stage] for stage in stages] == [["control-plane"], ["envoy", "aggregator"]]
    assert [c.role for c in stack().children] == [Role.CONTROL_PLANE, Role.ENVOY, Role.AGGREGATOR]


def test_without_the_aggregator_package_it_is_left_out_with_a_note():
    result = stack(aggregator_available=False)
    assert [c.name for c in result.children] == ["control-plane", "envoy"]
    assert len(result.notes) == 1 and "aggregator" in result.notes[0]


def test_python_children_run_the_cli_with_the_config_and_log_level():
    cp, _, agg = stack().children
    assert cp.argv == ("/venv/bin/python", "-m", "xds_control.cli", "serve", "-c", "/etc/xds/config.yaml", "--log-level", "warning",
                       "--log-format", "text")  # fmt: skip
    assert agg.argv[3:6] == ("aggregator", "-c", "/etc/xds/config.yaml")
    assert cp.env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize("subcommand", ["serve", "aggregator"])
def test_child_command_lines_are_real_cli_subcommands_with_valid_flags(subcommand, capsys):
    argv = plan.cli_argv("python", subcommand, "config.yaml", "info", "json")
    assert main([*argv[3:], "--help"]) == 0
    assert "--config" in capsys.readouterr().out


def test_envoy_command_line_disables_hot_restart_and_uses_the_configured_log_level():
    config = parse_config({"envoy": {"log_level": "debug"}})
    envoy = stack(config).stages[1][0]
    assert envoy.argv[:3] == ("/opt/envoy", "-c", "/run/xds/bootstrap.yaml")
    for flag in ("--disable-hot-restart", "--use-dynamic-base-id"):
        assert flag in envoy.argv
    assert envoy.argv[envoy.argv.index("--concurrency") + 1] == "1"
    assert envoy.argv[envoy.argv.index("--log-level") + 1] == "debug"


def test_control_plane_is_ready_when_it_prints_its_ready_line():
    cp = stack().children[0]
    assert cp.ready == (LineReady(plan.CONTROL_PLANE_READY),)
    (rule,) = cp.ready
    assert re.search(rule.pattern, "READY xds=127.0.0.1:18000 admin=127.0.0.1:18001")
    assert not re.search(rule.pattern, "2026-01-01 INFO xds_control: READY xds=... is not at the start")


def test_envoy_is_ready_when_admin_ready_answers_200_and_the_public_listener_accepts():
    config = parse_config({"listener": {"address": "0.0.0.0", "port": 8080}, "envoy": {"admin_port": 9000}})
    envoy = stack(config).stages[1][0]
    assert envoy.ready == (HttpReady("http://127.0.0.1:9000/ready", 200), TcpReady("127.0.0.1", 8080))


def test_aggregator_is_ready_when_it_says_so_and_its_port_accepts():
    config = parse_config({"aggregator": {"address": "0.0.0.0", "port": 18181}})
    line, tcp = stack(config).children[2].ready
    assert re.search(line.pattern, "READY http://0.0.0.0:18181/mcp")
    assert tcp == TcpReady("127.0.0.1", 18181)


def test_each_aggregator_replica_is_a_child_on_its_own_port():
    config = parse_config({"aggregator": {"port": 18181, "metrics": "127.0.0.1:19100", "replicas": 3}})
    result = stack(config)
    assert [c.name for c in result.stages[1]] == ["envoy", "aggregator", "aggregator-1", "aggregator-2"]
    for i, child in enumerate(result.stages[1][1:]):
        assert child.ready[1] == TcpReady("127.0.0.1", 18181 + i)
        assert child.argv[3:6] == ("aggregator", "-c", "/etc/xds/config.yaml")
        if i:
            assert child.argv[-2:] == ("--replica", str(i))
        else:
            assert "--replica" not in child.argv
        assert main([*child.argv[3:], "--help"]) == 0


def test_the_demo_config_with_replicas_spreads_mcp_over_them():
    config = plan.demo_config(
        {"weather": "http://127.0.0.1:9001/mcp"}, {**PORTS, "aggregator_metrics": 20010}, replicas=2
    )
    assert config.aggregator_upstreams() == [("127.0.0.1", 20006), ("127.0.0.1", 20007)]


def test_envoy_gets_a_longer_start_budget_than_its_initial_fetch_timeout():
    envoy = stack().stages[1][0]
    assert envoy.start_timeout > 15


def test_demo_backends_listen_on_os_chosen_ports_and_are_ready_on_their_ready_line():
    specs = plan.demo_backend_specs("/py")
    assert [s.name for s in specs] == ["weather", "calendar", "notes"]
    for spec in specs:
        assert spec.argv[:3] == ("/py", "-m", "examples.backends.demo_server")
        assert spec.argv[spec.argv.index("--port") + 1] == "0"
        assert spec.argv[spec.argv.index("--name") + 1] == spec.name
        assert not spec.critical
        (rule,) = spec.ready
        assert re.search(rule.pattern, "READY http://127.0.0.1:41234/mcp")


def test_parse_ready_url():
    assert plan.parse_ready_url("READY http://127.0.0.1:41234/mcp\n") == "http://127.0.0.1:41234/mcp"
    assert plan.parse_ready_url("READY http://[::1]:9/mcp") == "http://[::1]:9/mcp"
    with pytest.raises(ValueError):
        plan.parse_ready_url("listening on 41234")


def test_demo_config_exposes_the_backends_on_the_given_ports():
    urls = {"weather": "http://127.0.0.1:9001/mcp", "notes": "http://127.0.0.1:9002/mcp"}
    config = plan.demo_config(urls, PORTS)
    assert config.listener.expose_backends
    assert (config.listener.port, config.egress.port, config.envoy.admin_port) == (20000, 20001, 20002)
    assert config.control_plane.xds_host_port == ("127.0.0.1", 20003)
    assert config.control_plane.admin_host_port == ("127.0.0.1", 20004)
    assert config.aggregator.port == 20006
    assert {b.name: b.url for b in config.backends} == urls
    assert config.health.interval < 30  # short enough to watch a backend fail and recover


def test_demo_port_keys_cover_every_port_the_demo_config_needs():
    assert set(plan.DEMO_PORT_KEYS) | {"listener"} == set(PORTS)


@pytest.mark.parametrize(
    ("env", "port"), [({}, 10000), ({"XDS_CONTROL_DEMO_PORT": "0"}, 0), ({"XDS_CONTROL_DEMO_PORT": " 12345 "}, 12345)]
)
def test_demo_listener_port(env, port):
    assert plan.demo_listener_port(env) == port


@pytest.mark.parametrize("raw", ["abc", "-1", "70000"])
def test_demo_listener_port_rejects_nonsense(raw):
    with pytest.raises(ValueError, match="XDS_CONTROL_DEMO_PORT"):
        plan.demo_listener_port({"XDS_CONTROL_DEMO_PORT": raw})


def test_endpoint_lines_name_the_mcp_endpoint_and_each_exposed_backend():
    urls = {"weather": "http://127.0.0.1:9001/mcp", "calendar": "http://127.0.0.1:9002/mcp"}
    lines = plan.endpoint_lines(plan.demo_config(urls, PORTS))
    assert lines[0] == "MCP endpoint: http://127.0.0.1:20000/mcp"
    assert [line.split() for line in lines[1:]] == [
        ["backend", "weather", "http://127.0.0.1:20000/backends/weather/mcp"],
        ["backend", "calendar", "http://127.0.0.1:20000/backends/calendar/mcp"],
    ]


def test_endpoint_lines_without_exposed_backends_and_on_a_wildcard_listener():
    config = parse_config(
        {"listener": {"address": "0.0.0.0", "port": 8000}, "backends": [{"name": "a", "url": "http://h:1/mcp"}]}
    )
    assert plan.endpoint_lines(config) == ["MCP endpoint: http://127.0.0.1:8000/mcp"]


def test_bound_ports_are_every_socket_of_the_parts_that_start():
    config = parse_config({})
    assert plan.bound_ports(config) == config.bound_sockets()
    assert list(plan.bound_ports(config)) == [
        "listener.port",
        "egress.port",
        "envoy.admin_port",
        "control_plane.xds",
        "control_plane.admin",
        "control_plane.metrics",
        "aggregator.port",
        "aggregator.metrics",
    ]
    assert plan.bound_ports(config)["listener.port"] == ("127.0.0.1", 10000)
    assert not any(p.startswith("aggregator.") for p in plan.bound_ports(config, aggregator=False))


# -- exit decisions -----------------------------------------------------------------------------

CRITICAL = ChildSpec(name="envoy", role=Role.ENVOY, argv=("envoy",), ready=())
BACKEND = ChildSpec(name="weather", role=Role.BACKEND, argv=("py",), ready=(), critical=False)


@pytest.mark.parametrize("spec", [CRITICAL, BACKEND])
def test_any_exit_before_ready_fails_the_start(spec):
    decision = on_child_exit(spec, 1, Phase.STARTING)
    assert decision.stop_stack and decision.exit_code == 1 and decision.level == "error"
    assert decision.message == f"{spec.name} exited with code 1 before it was ready"


def test_a_critical_child_dying_stops_the_stack_with_exit_1():
    decision = on_child_exit(CRITICAL, -signal.SIGKILL, Phase.RUNNING)
    assert decision.stop_stack and decision.exit_code == 1
    assert decision.message == "envoy was killed by SIGKILL; stopping the stack"


def test_a_demo_backend_dying_keeps_the_stack_running():
    decision = on_child_exit(BACKEND, 0, Phase.RUNNING)
    assert not decision.stop_stack and decision.level == "warning"
    assert decision.message.startswith("weather exited with code 0;")


@pytest.mark.parametrize("spec", [CRITICAL, BACKEND])
@pytest.mark.parametrize("code", [0, 1, -signal.SIGTERM])
def test_exits_while_stopping_are_expected(spec, code):
    decision = on_child_exit(spec, code, Phase.STOPPING)
    assert not decision.stop_stack and decision.exit_code == 0 and decision.message == f"{spec.name} stopped"


def test_describe_returncode():
    assert plan.describe_returncode(3) == "exited with code 3"
    assert plan.describe_returncode(-15) == "was killed by SIGTERM"
    assert plan.describe_returncode(-200) == "was killed by signal 200"


def test_children_get_only_the_credentials_they_use():
    from xds_control.config import parse_config as parse
    from xds_control.runner.plan import child_environment, demo_backend_specs, plan_stack

    config = parse(
        {
            "control_plane": {"admin_token_env": "ADMIN_T", "xds_token_env": "XDS_T"},
            "backends": [{"name": "b", "url": "http://127.0.0.1:9/mcp", "auth": {"token_env": "B_T"}}],
        }
    )
    environ = {"PATH": "/bin", "LC_ALL": "C", "ADMIN_T": "a", "XDS_T": "x", "B_T": "b", "AWS_SECRET_ACCESS_KEY": "k"}
    stack = plan_stack(config, config_path="c", bootstrap_path="b", envoy_binary="envoy", python="py")
    envs = {spec.name: child_environment(spec, environ) for spec in stack.children}
    assert envs["envoy"] == {"PATH": "/bin", "LC_ALL": "C"}
    assert {"ADMIN_T", "B_T"} <= set(envs["aggregator"]) and "XDS_T" not in envs["aggregator"]
    assert {"ADMIN_T", "XDS_T", "B_T"} <= set(envs["control-plane"])
    for spec in demo_backend_specs("py"):
        assert set(child_environment(spec, environ)) == {"PATH", "LC_ALL", "PYTHONUNBUFFERED"}


def test_up_help_names_the_demo_port_variable(capsys):
    assert main(["up", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert plan.DEMO_PORT_ENV in text and f"port {plan.DEMO_LISTENER_PORT}" in text and "0: any free port" in text
