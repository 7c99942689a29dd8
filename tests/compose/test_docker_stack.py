"""The compose stack for real: build, start, kill a backend, watch it leave and come back.

Needs a Docker engine and the compose plugin; skipped, saying why, where none answers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.procs import ROOT
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.timeout(900)]

COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"


def docker_client():
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


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[object, str, str]]:
    client = docker_client()
    project = f"xds-control-test-{secrets.token_hex(3)}"
    # Host port 0: Docker picks a free one at bind time (no check-then-bind race with other processes).
    env = {
        **os.environ,
        "XDS_CONTROL_ADMIN_TOKEN": secrets.token_hex(16),
        "XDS_CONTROL_XDS_TOKEN": secrets.token_hex(16),
        "XDS_CONTROL_PUBLIC_PORT": "0",
    }
    base = ["docker", "compose", "-f", str(COMPOSE_FILE), "-p", project]
    try:
        subprocess.run(
            [*base, "up", "--build", "--detach", "--wait", "--wait-timeout", "300"], check=True, env=env, timeout=840
        )
        published = subprocess.run(
            [*base, "port", "envoy", "10000"], check=True, env=env, capture_output=True, text=True, timeout=60
        ).stdout.strip()
        yield client, project, f"http://127.0.0.1:{published.rsplit(':', 1)[1]}"
    finally:
        subprocess.run([*base, "logs", "--no-color", "--tail", "50"], env=env, timeout=60)
        subprocess.run([*base, "down", "--volumes", "--remove-orphans", "--timeout", "5"], env=env, timeout=120)


def tool_names(public: str) -> list[str]:
    from mcp import Client

    async def listing() -> list[str]:
        async with Client(f"{public}/mcp") as client:
            return [t.name for t in (await client.list_tools()).tools]

    return asyncio.run(asyncio.wait_for(listing(), 10))


def backends_listed(public: str) -> set[str]:
    names = tool_names(public)
    return {b for b in ("weather", "calendar", "notes") if any(name.startswith(f"{b}_") for name in names)}


def test_the_stack_serves_every_backend_and_survives_a_backend_kill(stack):
    client, project, public = stack
    wait_until(
        lambda: backends_listed(public) == {"weather", "calendar", "notes"},
        timeout=60,
        interval=1,
        what="all backends on /mcp",
    )

    weather = client.containers.get(f"{project}-weather-1")
    weather.kill()
    wait_until(
        lambda: backends_listed(public) == {"calendar", "notes"}, timeout=60, interval=1, what="weather to leave /mcp"
    )

    weather.start()
    wait_until(
        lambda: backends_listed(public) == {"weather", "calendar", "notes"},
        timeout=90,
        interval=1,
        what="weather to come back",
    )
