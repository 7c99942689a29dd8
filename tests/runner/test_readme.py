"""The README stays true: its configuration reference matches the models, its commands exist."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.support.procs import ROOT
from xds_control.cli import cli
from xds_control.config import parse_duration
from xds_control.runner import plan
from xds_control.schema import ConfigField, iter_config_fields

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def reference_rows() -> dict[str, str]:
    """`key` -> default cell, from the configuration reference table."""
    rows = {}
    for line in section("Configuration reference").splitlines():
        match = re.match(r"^\| `([^`]+)` \| ([^|]*) \|", line)
        if match:
            assert match.group(1) not in rows, f"{match.group(1)} is listed twice"
            rows[match.group(1)] = match.group(2).strip()
    return rows


FIELDS = {f.path: f for f in iter_config_fields() if not f.section}


def test_every_config_key_is_in_the_reference_and_every_reference_key_exists():
    listed = set(reference_rows())
    assert sorted(listed - set(FIELDS)) == [], "README lists keys the config does not have"
    assert sorted(set(FIELDS) - listed) == [], "config keys missing from the README's reference"


def readme_default(cell: str, field: ConfigField) -> Any:
    if cell == "none" or cell.startswith("one of"):
        return None
    if cell == "required":
        return "required"
    match = re.fullmatch(r"`([^`]*)`", cell)
    assert match, f"{field.path}: default cell {cell!r} is not `value`, none, required or one of"
    try:
        value = yaml.safe_load(match.group(1))
    except yaml.YAMLError:  # e.g. {backend}_ is a plain string to us, not YAML
        value = match.group(1)
    return parse_duration(value) if field.duration else value


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_reference_defaults_match_the_models(path):
    field = FIELDS[path]
    cell = reference_rows().get(path)
    if cell is None:
        pytest.skip("not listed (the key test reports it)")
    expected = "required" if field.required else field.default
    assert readme_default(cell, field) == expected


def test_readme_shows_the_two_commands_and_ci_runs_the_test_one():
    assert "\n./run up\n" in README
    assert "\n./run test\n" in README
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[0] == "#!/usr/bin/env bash"
    assert ci[-1] == "./run test"
    assert "set -euo pipefail" in ci


def test_the_command_line_section_names_every_subcommand():
    block = section("Command line")
    named = set(re.findall(r"^xds-control ([\w-]+)", block, re.M))
    assert named == set(cli.commands)


def test_the_quick_start_output_is_what_the_demo_prints():
    urls = {name: f"http://127.0.0.1:{9001 + i}/mcp" for i, name in enumerate(plan.DEMO_BACKENDS)}
    ports = {key: 20000 + i for i, key in enumerate(plan.DEMO_PORT_KEYS)} | {"listener": plan.DEMO_LISTENER_PORT}
    for line in plan.endpoint_lines(plan.demo_config(urls, ports)):
        assert f"\n{line}\n" in section("Quick start")
    assert plan.DEMO_PORT_ENV in section("Quick start")


def test_the_readme_says_what_bounds_failure_detection_and_the_demos_figure_is_its_config():
    intro = " ".join(README.split("## Quick start")[0].split())
    assert "the moment" not in intro
    assert "within `health.interval` × `health.unhealthy_threshold`" in intro
    urls = {name: f"http://127.0.0.1:{9001 + i}/mcp" for i, name in enumerate(plan.DEMO_BACKENDS)}
    ports = {key: 20000 + i for i, key in enumerate(plan.DEMO_PORT_KEYS)} | {"listener": plan.DEMO_LISTENER_PORT}
    health = plan.demo_config(urls, ports).health
    quick = " ".join(section("Quick start").split())
    bound = (
        f"within about {health.interval * health.unhealthy_threshold:g} s (the demo probes every {health.interval:g} s"
    )
    assert f"{bound} and needs {health.unhealthy_threshold} failures in a row)" in quick


def test_the_quick_start_says_what_the_first_run_installs_and_how_long_it_takes():
    text = " ".join(section("Quick start").split())
    assert "The first run installs the gateway and its Python dependencies" in text
    assert "about a minute" in text and "a line per step with the time it took" in text
    assert "`./run up` installs neither the test tools nor the npm servers" in text


def reference_meanings() -> dict[str, str]:
    rows = {}
    for line in section("Configuration reference").splitlines():
        match = re.match(r"^\| `([^`]+)` \| [^|]* \| ([^|]*) \|$", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


@pytest.mark.parametrize("path", sorted(FIELDS))
def test_every_keys_schema_description_is_the_readmes_meaning(path):
    """What an editor shows for a key (its JSON Schema description) is the README's one line, less the backticks."""
    meaning = reference_meanings().get(path)
    if meaning is None:
        pytest.skip("not listed (the key test reports it)")
    assert FIELDS[path].field.description == meaning.replace("`", "")


def test_every_property_of_the_schema_has_a_description():
    from xds_control.schema import config_schema

    schema = config_schema()
    objects = {"": schema, **{f"{name}.": d for name, d in schema["$defs"].items()}}
    missing = [f"{where}{key}" for where, obj in objects.items() for key, prop in obj.get("properties", {}).items()
               if not prop.get("description")]  # fmt: skip
    assert missing == []
    assert sum(len(obj.get("properties", {})) for obj in objects.values()) >= 70


def test_every_reference_row_says_what_the_key_means():
    for line in section("Configuration reference").splitlines():
        match = re.match(r"^\| `([^`]+)` \| [^|]* \| ([^|]*) \|$", line)
        if match:
            assert match.group(2).strip(), f"{match.group(1)}: the meaning cell is empty"


# -- metrics reference ------------------------------------------------------------------------------


def registered_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every xds-control metric the code registers on the default registry: exposed name -> (type, labels).
    Importing the services imports every module that defines metrics."""
    import importlib

    from prometheus_client import REGISTRY

    for module in ("xds_control.controlplane", "xds_control.health.monitor", "xds_control.xds.server", "xds_control.admin.service",
                   "xds_control.aggregator.service"):  # fmt: skip
        importlib.import_module(module)
    found = {}
    for collector in list(REGISTRY._collector_to_names):
        name, kind = getattr(collector, "_name", ""), getattr(collector, "_type", "")
        if name.startswith("xds_control"):
            exposed = f"{name}_total" if kind == "counter" else name
            found[exposed] = (kind, tuple(collector._labelnames))
    return found


def metrics_rows() -> dict[str, tuple[str, tuple[str, ...], str, str]]:
    rows = {}
    for line in section("Metrics reference").splitlines():
        match = re.match(r"^\| `([a-z_]+)` \| (\w+) \| ([^|]*) \| ([^|]*) \| ([^|]*) \|$", line)
        if match:
            name, kind, labels, served_by, meaning = (g.strip() for g in match.groups())
            assert name not in rows, f"{name} is listed twice"
            rows[name] = (kind, tuple(re.findall(r"`([^`]+)`", labels)), served_by, meaning)
    return rows


def test_the_metrics_reference_lists_every_registered_metric_and_nothing_else():
    registered, listed = registered_metrics(), metrics_rows()
    assert len(registered) > 20
    assert sorted(set(registered) - set(listed)) == [], "metrics missing from the README's reference"
    assert sorted(set(listed) - set(registered)) == [], "the README lists metrics the code does not register"


@pytest.mark.parametrize("name", sorted(registered_metrics()))
def test_each_metric_row_has_the_type_labels_and_process_of_the_code(name):
    row = metrics_rows().get(name)
    if row is None:
        pytest.skip("not listed (the list test reports it)")
    kind, labels, served_by, meaning = row
    assert (kind, labels) == registered_metrics()[name]
    assert served_by == ("aggregator" if name.startswith("xds_control_aggregator_") else "control plane")
    assert meaning


def test_the_readme_documents_the_admin_api_with_grpcurl_and_the_service_it_serves():
    block = section("Admin API")
    from xds_control.admin.v1 import admin_pb2

    service = admin_pb2.DESCRIPTOR.services_by_name["Admin"]
    assert service.full_name == "xds_control.admin.v1.Admin"
    for method in service.methods:
        assert f"`{method.name}`" in block, f"the Admin API table does not name {method.name}"
    assert "grpcurl -plaintext 127.0.0.1:18001 list" in block
    assert "grpcurl -plaintext 127.0.0.1:18001 xds_control.admin.v1.Admin/ListBackends" in block


def test_the_tracing_and_logs_sections_name_what_the_code_makes():
    from xds_control.aggregator.tracing import CALL_SPAN
    from xds_control.health.probe import PROBE_SPAN
    from xds_control.xds.server import PUSH_SPAN

    for span in (PROBE_SPAN, PUSH_SPAN, CALL_SPAN, "xds_control.aggregator.auth_retry"):
        assert f"`{span}`" in section("Tracing")
    for event in ("backend_transition", "breaker_transition", "nack", "config_reload", "backend_status"):
        assert f"`{event}`" in section("Logs")
    for flag in ("UH", "UF", "URX", "NR"):
        assert f"`{flag}`" in section("Troubleshooting")


def test_troubleshooting_says_what_a_not_mcp_last_error_means():
    from xds_control.health.classify import Category

    row = next(line for line in section("Troubleshooting").splitlines() if line.startswith("| `unhealthy` |"))
    for category in (Category.NOT_MCP, Category.PROTOCOL_ERROR, Category.HTTP_5XX, Category.CONNECTION_REFUSED):
        assert f"`{category}`" in row
