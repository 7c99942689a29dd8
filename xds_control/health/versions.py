"""The MCP protocol revisions the prober speaks, as the SDK's `mcp_types.version` names them.

Copied rather than imported: importing `mcp_types` loads every protocol model
(~90 ms and ~7 MB for three constants) into the control plane, which otherwise
needs nothing of the SDK. tests/health/test_versions.py fails when they drift.
"""

from __future__ import annotations

HANDSHAKE_PROTOCOL_VERSIONS: tuple[str, ...] = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
LATEST_HANDSHAKE_VERSION = "2025-11-25"
LATEST_MODERN_VERSION = "2026-07-28"
