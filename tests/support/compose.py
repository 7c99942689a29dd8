"""Docker Compose projects for the `docker` tests: the engine or a skip saying why, and what leaks to logs."""

from __future__ import annotations

import os
import secrets
import subprocess
from typing import Any

import pytest


def docker_client() -> Any:
    """A Docker SDK client to a running engine with the compose plugin; else the test is skipped, saying why."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker engine answers: {exc.__class__.__name__}: {exc}")
    try:
        subprocess.run(["docker", "compose", "version"], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"the docker compose plugin is not available: {exc}")
    return client


def compose_env(**extra: str) -> dict[str, str]:
    """The environment of a compose project under test: fresh admin and ADS tokens, plus `extra`."""
    return {
        **os.environ,
        "XDS_CONTROL_ADMIN_TOKEN": secrets.token_hex(16),
        "XDS_CONTROL_XDS_TOKEN": secrets.token_hex(16),
        **extra,
    }


def project_logs(base: list[str], env: dict[str, str]) -> str:
    """Every container's whole log of the compose project `base` (`docker compose -f FILE -p NAME`)."""
    return subprocess.run(
        [*base, "logs", "--no-color"], env=env, capture_output=True, text=True, timeout=120, check=True
    ).stdout


def project_containers(client: Any, project: str) -> list[Any]:
    return client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project}"})
