"""The committed *_pb2 files are what regen.sh makes from admin.proto, and they load on the installed runtime."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import google.protobuf
import grpc
import pytest

ROOT = Path(__file__).resolve().parents[2]
V1 = ROOT / "xds_control" / "admin" / "v1"
GENERATED = ("admin_pb2.py", "admin_pb2.pyi", "admin_pb2_grpc.py")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:3])


def test_generated_code_matches_the_installed_runtimes() -> None:
    source = (V1 / "admin_pb2.py").read_text()
    gencode = next(
        line.split(":", 1)[1].strip() for line in source.splitlines() if line.startswith("# Protobuf Python Version:")
    )
    assert _version(google.protobuf.__version__) >= _version(gencode)
    assert _version(google.protobuf.__version__)[0] == _version(gencode)[0]
    grpc_source = (V1 / "admin_pb2_grpc.py").read_text()
    generated_grpc = next(
        line.split("'")[1] for line in grpc_source.splitlines() if line.startswith("GRPC_GENERATED_VERSION")
    )
    assert _version(grpc.__version__) >= _version(generated_grpc)


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools is not installed (dev only)")
def test_committed_code_is_regenerated_from_the_proto(tmp_path: Path) -> None:
    shutil.copytree(
        V1, tmp_path / "xds_control" / "admin" / "v1", ignore=shutil.ignore_patterns(*GENERATED, "__pycache__")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            "-I.",
            "--python_out=.",
            "--pyi_out=.",
            "--grpc_python_out=.",
            "xds_control/admin/v1/admin.proto",
        ],
        cwd=tmp_path,
        check=True,
        timeout=60,
    )
    for name in GENERATED:
        fresh = (tmp_path / "xds_control" / "admin" / "v1" / name).read_text()
        assert fresh == (V1 / name).read_text(), f"{name} is stale: run xds_control/admin/regen.sh"
