"""The prober's copy of the protocol revisions matches the SDK's."""

from __future__ import annotations

import subprocess
import sys

from mcp_types import version as sdk

from xds_control.health import versions


def test_versions_match_the_sdk() -> None:
    assert versions.HANDSHAKE_PROTOCOL_VERSIONS == sdk.HANDSHAKE_PROTOCOL_VERSIONS
    assert versions.LATEST_HANDSHAKE_VERSION == sdk.LATEST_HANDSHAKE_VERSION
    assert versions.LATEST_MODERN_VERSION == sdk.LATEST_MODERN_VERSION


def test_the_control_plane_imports_no_mcp_sdk() -> None:
    """The control plane probes with its own client: importing it must not load the SDK (tens of MB)."""
    code = "import sys, xds_control.controlplane, xds_control.health.monitor; print(sorted(m for m in ('mcp', 'mcp_types', 'httpx2') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
