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
    named = set(re.findall(r"^xds-control (\w+)", block, re.M))
    assert named == set(cli.commands)


def test_the_quick_start_output_is_what_the_demo_prints():
    urls = {name: f"http://127.0.0.1:{9001 + i}/mcp" for i, name in enumerate(plan.DEMO_BACKENDS)}
    ports = {key: 20000 + i for i, key in enumerate(plan.DEMO_PORT_KEYS)} | {"listener": plan.DEMO_LISTENER_PORT}
    for line in plan.endpoint_lines(plan.demo_config(urls, ports)):
        assert f"\n{line}\n" in section("Quick start")
    assert plan.DEMO_PORT_ENV in section("Quick start")
