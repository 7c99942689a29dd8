"""pyproject lists packages explicitly (for envoy/ -> xds_control.envoy); this keeps the list complete."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for top in ("xds_control", "examples"):
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    found.add("xds_control.envoy")
    assert found - listed == set(), f"add to [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed but missing: {sorted(listed - found)}"


def test_bootstrap_template_is_shipped_with_the_package():
    import xds_control.envoy

    assert (Path(xds_control.envoy.__file__).parent / "bootstrap.yaml.tmpl").is_file()
