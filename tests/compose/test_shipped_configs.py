"""Every config file the project ships is valid, by the JSON Schema (`xds-control schema`) and by `xds-control check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support.procs import ROOT
from xds_control.cli import main
from xds_control.config import parse_config, parse_duration
from xds_control.errors import ConfigError
from xds_control.schema import config_schema

SHIPPED = sorted([*ROOT.glob("examples/configs/*.yaml"), ROOT / "compose" / "config.yaml"])


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]


def test_there_are_shipped_configs():
    names = {p.relative_to(ROOT).as_posix() for p in SHIPPED}
    assert {"compose/config.yaml", "examples/configs/local.yaml", "examples/configs/production.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_config_matches_the_schema(validator, path: Path):
    assert schema_errors(validator, yaml.safe_load(path.read_text())) == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_shipped_config_passes_check(path: Path, capsys):
    assert main(["check", "-c", str(path)]) == 0, capsys.readouterr().err


def test_schema_command_prints_the_schema(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == config_schema()
    assert printed["$schema"] == "https://json-schema.org/draft/2020-12/schema"


BROKEN = {
    "unknown top-level key": {"listners": {"port": 10000}},
    "unknown nested key": {"health": {"intervall": "5s"}},
    "port out of range": {"listener": {"port": 70000}},
    "port of the wrong type": {"listener": {"port": "ten thousand"}},
    "duration in words": {"health": {"interval": "five seconds"}},
    "negative duration": {"circuit_breaker": {"open_timeout": -1}},
    "unknown failure mode": {"aggregator": {"failure_mode": "sometimes"}},
    "backend without a name": {"backends": [{"url": "http://127.0.0.1:9001/mcp"}]},
    "backends not a list": {"backends": {"name": "weather"}},
}


@pytest.mark.parametrize("data", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_config_is_rejected_by_the_schema_and_by_check(validator, data, tmp_path, capsys):
    assert schema_errors(validator, data)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["check", "-c", str(path)]) == 2
    assert "invalid config" in capsys.readouterr().err


@pytest.mark.parametrize(
    "value", ["250ms", "5s", "1m", "2h", "1.5s", " 10s ", "30", 0, 2, 0.25, "-5s", "5 min", "s", "", True, -1, "1d"]
)
def test_the_schema_accepts_exactly_the_durations_the_loader_accepts(validator, value):
    try:
        parse_duration(value)
        loader_ok = True
    except ValueError:
        loader_ok = False
    assert (not schema_errors(validator, {"health": {"timeout": value}})) == loader_ok


def test_a_config_that_passes_the_schema_can_still_fail_cross_checks(validator):
    """The schema checks shapes; `check` also checks relations (here: two parts on one port)."""
    data = {"listener": {"port": 18000}}
    assert schema_errors(validator, data) == []
    with pytest.raises(ConfigError, match="port clashes"):
        parse_config(data)
