#!/usr/bin/env bash
# Regenerate the admin API's Python code from xds_control/admin/v1/admin.proto.
#
# Needs grpcio-tools (a dev-only dependency: `pip install grpcio-tools`). Its
# version sets the runtime floor of the generated code: the *_pb2.py files check
# `protobuf >= <gencode version>` on import and admin_pb2_grpc.py checks
# `grpcio >= <grpcio-tools version>`; keep pyproject's pins in step.
# tests/admin/test_generated.py fails when the committed files are stale.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
python="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && python=.venv/bin/python
"$python" -m grpc_tools.protoc -I. \
  --python_out=. --pyi_out=. --grpc_python_out=. \
  xds_control/admin/v1/admin.proto
