"""Config validation: every bad input is named by its field path, with the bad value."""

from __future__ import annotations

import pytest

from xds_control.cli import main
from xds_control.config import (
    dump_config,
    format_duration,
    load_config,
    parse_config,
    parse_config_text,
    parse_duration,
)
from xds_control.errors import ConfigError

GOOD = {"backends": [{"name": "weather", "url": "http://127.0.0.1:9001/mcp"}]}


def _issues(data) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return [str(i) for i in info.value.issues]


def test_defaults_match_the_design():
    c = parse_config({})
    assert (c.listener.address, c.listener.port, c.listener.expose_backends) == ("127.0.0.1", 10000, False)
    assert (c.egress.port, c.envoy.admin_port, c.envoy.node_id) == (10001, 9901, "xds-control")
    assert (c.control_plane.xds, c.control_plane.admin, c.control_plane.metrics) == (
        "127.0.0.1:18000",
        "127.0.0.1:18001",
        "127.0.0.1:9102",
    )
    assert (
        c.aggregator.port,
        c.aggregator.failure_mode,
        c.aggregator.conflict_resolution,
        c.aggregator.prefix_format,
    ) == (18080, "fail", "prefix", "{backend}_")
    assert (
        c.health.interval,
        c.health.timeout,
        c.health.unhealthy_threshold,
        c.health.healthy_threshold,
        c.health.degraded_latency,
    ) == (30, 10, 3, 1, 5)
    cb = c.circuit_breaker
    assert (cb.enabled, cb.failure_threshold, cb.open_timeout, cb.max_open_timeout, cb.half_open_successes) == (
        True,
        5,
        60,
        600,
        1,
    )
    od = c.outlier_detection
    assert (od.consecutive_5xx, od.consecutive_gateway_failure, od.interval, od.base_ejection_time) == (5, 5, 10, 30)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("5s", 5), ("1m", 60), ("10m", 600), ("2h", 7200), (3, 3), (1.5, 1.5), ("0.5s", 0.5), ("7", 7)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["-1s", -2, "5 parsecs", "", True, None, "1x"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration_round_trips():
    for seconds in (0.25, 5, 60, 600, 90):
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"listener": {"bogus": 1}}, "listener.bogus: unknown key"),
        ({"nonsense": {}}, "nonsense: unknown key"),
        ({"listener": {"port": 70000}}, "listener.port"),
        ({"health": {"interval": "-5s"}}, "health.interval: a duration cannot be negative (got '-5s')"),
        ({"health": {"timeout": "soon"}}, "health.timeout"),
        ({"health": {"interval": 0}}, "health.interval: must be greater than zero"),
        ({"health": {"unhealthy_threshold": 0}}, "health.unhealthy_threshold"),
        (
            {"circuit_breaker": {"open_timeout": "5m", "max_open_timeout": "1m"}},
            "max_open_timeout must be at least open_timeout",
        ),
        ({"aggregator": {"failure_mode": "maybe"}}, "aggregator.failure_mode"),
        ({"aggregator": {"prefix_format": "x_"}}, "prefix_format must contain {backend}"),
        ({"control_plane": {"xds": "nohost"}}, "control_plane.xds"),
        ({"backends": [{"name": "Bad_Name", "url": "http://h:1/mcp"}]}, "backends.0.name"),
        ({"backends": [{"name": "a", "url": "ftp://h/mcp"}]}, "backends.0.url: URL scheme must be http or https"),
        ({"backends": [{"name": "a", "url": "http://u:p@h:1/mcp"}]}, "must not carry credentials"),
        ({"backends": [{"name": "a", "url": "http://h:99999/mcp"}]}, "backends.0.url: URL port is invalid"),
        ({"backends": [{"name": "a"}]}, "set exactly one of url or endpoints"),
        (
            {"backends": [{"name": "a", "url": "http://h:1/mcp", "endpoints": ["http://h:2/mcp"]}]},
            "set exactly one of url or endpoints",
        ),
        (
            {"backends": [{"name": "a", "endpoints": ["http://h:1/mcp", "http://h:2/other"]}]},
            "share one scheme and path",
        ),
        ({"backends": [{"name": "a", "endpoints": ["http://h:1/mcp", "notaurl"]}]}, "backends.0.endpoints.1"),
        (
            {"backends": [{"name": "a", "url": "http://h:1/mcp"}, {"name": "a", "url": "http://h:2/mcp"}]},
            "backends.1.name: duplicate backend name",
        ),
        ({"egress": {"port": 10000}}, "egress.port: port clashes with listener.port"),
        ({"aggregator": {"port": 18001}}, "aggregator.port: port clashes with control_plane.admin"),
        (
            {"backends": [{"name": "a", "url": "http://h:1/mcp", "auth": {"type": "bearer"}}]},
            "set exactly one of token_env or token_file",
        ),
        (
            {"backends": [{"name": "a", "url": "http://h:1/mcp", "auth": {"type": "header", "token_env": "X"}}]},
            "type: header needs header: NAME",
        ),
        (
            {"backends": [{"name": "a", "url": "http://h:1/mcp", "auth": {"type": "oauth", "token_env": "X"}}]},
            "backends.0.auth.type",
        ),
    ],
)
def test_validation_names_the_field(data, expected):
    issues = _issues(data)
    assert any(expected in issue for issue in issues), issues


def test_all_problems_are_reported_at_once():
    issues = _issues(
        {"listener": {"bogus": 1}, "health": {"interval": "-1s"}, "backends": [{"name": "a", "url": "ftp://x"}]}
    )
    assert len(issues) == 3


def test_manual_conflicts_must_be_resolved():
    issues = _issues(
        {
            "aggregator": {"conflict_resolution": "manual"},
            "backends": [
                {"name": "a", "url": "http://h:1/mcp", "tools": {"rename": {"search": "find"}}},
                {"name": "b", "url": "http://h:2/mcp", "tools": {"rename": {"lookup": "find"}}},
            ],
        }
    )
    assert any("backends.1.tools.rename.lookup" in i for i in issues), issues


def test_yaml_syntax_error_names_the_line():
    with pytest.raises(ConfigError, match="line 3, column 1: not valid YAML"):
        parse_config_text("listener:\n  port: [1,\n")


def test_non_mapping_document():
    with pytest.raises(ConfigError, match="mapping"):
        parse_config_text("- a\n- b\n")


def test_dump_and_reload_round_trip(tmp_path):
    config = parse_config(GOOD)
    path = tmp_path / "c.yaml"
    path.write_text(dump_config(config))
    assert load_config(path) == config


def test_tool_filter_globs():
    tools = (
        parse_config(
            {
                "backends": [
                    {
                        "name": "a",
                        "url": "http://h:1/mcp",
                        "tools": {"include": ["get_*", "list"], "exclude": ["get_secret*"]},
                    }
                ]
            }
        )
        .backends[0]
        .tools
    )
    assert tools.allows("get_forecast") and tools.allows("list")
    assert not tools.allows("get_secret_key") and not tools.allows("delete")


def test_auth_token_is_read_fresh_from_file(tmp_path):
    token = tmp_path / "token"
    token.write_text("one\n")
    auth = (
        parse_config({"backends": [{"name": "a", "url": "http://h:1/mcp", "auth": {"token_file": str(token)}}]})
        .backends[0]
        .auth
    )
    assert auth.header_value() == ("Authorization", "Bearer one")
    token.write_text("two")
    assert auth.header_value() == ("Authorization", "Bearer two")


def test_check_command_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text(dump_config(parse_config(GOOD)))
    assert main(["check", "-c", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("backends:\n  - name: weather\n    url: ftp://nowhere\nhealth:\n  interval: -3s\n")
    assert main(["check", "-c", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "backends.0.url" in err and "health.interval" in err
    assert main(["check", "-c", str(tmp_path / "missing.yaml")]) == 2


def test_bootstrap_command_prints_ads_to_the_control_plane(tmp_path, capsys, monkeypatch):
    import yaml

    monkeypatch.delenv("XDS_TEST_TOKEN", raising=False)
    path = tmp_path / "c.yaml"
    path.write_text(
        dump_config(
            parse_config(
                {
                    "control_plane": {"xds": "0.0.0.0:18500", "xds_token_env": "XDS_TEST_TOKEN"},
                    "envoy": {"node_id": "edge-1"},
                }
            )
        )
    )
    assert main(["bootstrap", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "${XDS_TEST_TOKEN}" in err  # unset here: a placeholder, and a note saying so
    [grpc_service] = yaml.safe_load(out)["dynamic_resources"]["ads_config"]["grpc_services"]
    assert grpc_service["initial_metadata"] == [{"key": "authorization", "value": "Bearer ${XDS_TEST_TOKEN}"}]
    monkeypatch.setenv("XDS_TEST_TOKEN", "t0ken")
    assert main(["bootstrap", "-c", str(path)]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["dynamic_resources"]["ads_config"]["grpc_services"][0]["initial_metadata"][0]["value"] == "Bearer t0ken"
    assert doc["node"]["id"] == "edge-1"
    address = doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"
    ]
    assert address["socket_address"] == {"address": "127.0.0.1", "port_value": 18500}
    assert doc["dynamic_resources"]["ads_config"]["api_type"] == "GRPC"


def test_bootstrap_per_node_with_control_planes_in_failover_order(tmp_path, capsys):
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(dump_config(parse_config({"envoy": {"control_plane_address": ["cp-a:18000", "cp-b:18000"]}})))
    argv = ["bootstrap", "-c", str(path), "--node-id", "edge-7", "--role", "edge", "--admin-port", "9911"]
    assert main([*argv, "--listener-port", "10010"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["node"]["id"] == "edge-7"
    assert doc["node"]["metadata"] == {"xds_control": {"role": "edge", "listener_port": 10010}}
    assert doc["admin"]["address"]["socket_address"]["port_value"] == 9911
    xds = doc["static_resources"]["clusters"][0]
    hosts = [
        (group["priority"], group["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["address"])
        for group in xds["load_assignment"]["endpoints"]
    ]
    assert hosts == [(0, "cp-a"), (1, "cp-b")]
    assert xds["health_checks"][0]["tcp_health_check"] == {}
    assert xds["outlier_detection"]["consecutive_local_origin_failure"] == 1

    assert main(["bootstrap", "-c", str(path), "--control-plane", "10.0.0.9:18000"]) == 0
    doc = yaml.safe_load(capsys.readouterr().out)
    assert doc["node"]["metadata"] == {}  # no flag: the default profile, nothing to say
    assert [g["priority"] for g in doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"]] == [0]
    assert doc["static_resources"]["clusters"][0]["health_checks"] == []

    assert main(["bootstrap", "-c", str(path), "--control-plane", "nowhere"]) == 2
    assert "--control-plane" in capsys.readouterr().err
    assert main(["bootstrap", "-c", str(path), "--role", "gateway"]) == 2


def test_serve_addresses_from_the_command_line_are_checked_like_the_file(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    config = parse_config({})
    path.write_text(dump_config(config))
    assert main(["serve", "-c", str(path), "--xds", "nonsense"]) == 2
    assert "control_plane.xds" in capsys.readouterr().err
    assert main(["serve", "-c", str(path), "--admin", f"127.0.0.1:{config.listener.port}"]) == 2
    assert "port clashes" in capsys.readouterr().err
    moved = config.with_control_plane(xds="127.0.0.1:28000", admin=None, metrics="127.0.0.1:29102")
    assert moved.control_plane.xds == "127.0.0.1:28000" and moved.control_plane.admin == config.control_plane.admin


def test_aggregator_replicas_listen_on_consecutive_ports_and_are_checked():
    config = parse_config({"aggregator": {"port": 18080, "metrics": "127.0.0.1:9200", "replicas": 3}})
    assert config.aggregator_upstreams() == [("127.0.0.1", 18080), ("127.0.0.1", 18081), ("127.0.0.1", 18082)]
    third = config.for_aggregator_replica(2)
    assert third.aggregator.port == 18082 and third.aggregator.metrics == "127.0.0.1:9202"
    with pytest.raises(ConfigError, match="aggregator.replicas"):
        config.for_aggregator_replica(3)
    with pytest.raises(ConfigError, match=r"aggregator.port \(replica 1\)"):
        parse_config({"aggregator": {"port": 18080, "replicas": 2}, "control_plane": {"admin": "127.0.0.1:18081"}})
    with pytest.raises(ConfigError, match="aggregator.replicas"):
        parse_config({"aggregator": {"port": 65535, "replicas": 2}})


def test_a_typo_is_reported_with_the_nearest_key_and_what_its_absence_breaks_in_one_pass():
    issues = _issues({"backends": [{"name": "weather", "utl": "http://127.0.0.1:9001/mcp"}]})
    assert issues == [
        "backends.0.utl: unknown key (did you mean 'url'?)",
        "backends.0: set exactly one of url or endpoints",
    ]
    assert _issues({"helth": {"interval": "5s"}}) == ["helth: unknown key (did you mean 'health'?)"]
    assert _issues({"backends": [{"name": "a", "url": "http://h:1/mcp", "auth": {"tokne_env": "T"}}]}) == [
        "backends.0.auth.tokne_env: unknown key (did you mean 'token_env'?)",
        "backends.0.auth: set exactly one of token_env or token_file",
    ]
    assert _issues({"listener": {"zzz": 1}}) == ["listener.zzz: unknown key"]  # nothing near: no guess


def test_cross_checks_run_too_when_the_only_problems_are_unknown_keys():
    issues = _issues({"listener": {"prot": 1}, "egress": {"port": 10000}})
    assert issues == [
        "listener.prot: unknown key (did you mean 'port'?)",
        "egress.port: port clashes with listener.port (got 10000)",
    ]


def test_an_unknown_keys_value_is_never_echoed():
    secret = "sk-planted-0f9e8d-do-not-print"
    issues = _issues(
        {"backends": [{"name": "a", "url": "http://h:1/mcp", "auth": {"token": secret, "token_env": "T"}}]}
    )
    assert issues == ["backends.0.auth.token: unknown key (did you mean 'token_env'?)"]
    assert secret not in "\n".join(issues)


def test_check_names_the_typo_and_the_missing_url_in_one_run(tmp_path, capsys):
    path = tmp_path / "typo.yaml"
    path.write_text("helth:\n  interval: 5s\nbackends:\n  - name: weather\n    utl: http://127.0.0.1:9001/mcp\n")
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "helth: unknown key (did you mean 'health'?)" in err
    assert "backends.0.utl: unknown key (did you mean 'url'?)" in err
    assert "backends.0: set exactly one of url or endpoints" in err
