"""Authorization through a real Envoy and real backends: lists filtered per principal (both families, every
kind), a denied call refused exactly like an unknown name, a forged identity header granting nothing, no token
passthrough to backends, per-principal rate limits with 429 + Retry-After."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from tests.aggregator.support import FAMILIES, MODERN_ENVELOPE, MODERN_HEADERS, mcp_client
from tests.auth.conftest import Backends, auth_stack
from tests.auth.support import payload_header, post
from tests.support.procs import demo_backend
from tests.support.waiting import free_port
from xds_control.auth.identity import PAYLOAD_HEADER, PRINCIPAL_HEADER

pytestmark = pytest.mark.integration


async def _names(client: Any) -> dict[str, list[str]]:
    return {
        "tools": [t.name for t in (await client.list_tools()).tools],
        "resources": [str(r.uri) for r in (await client.list_resources()).resources],
        "prompts": [p.name for p in (await client.list_prompts()).prompts],
    }


async def _error(client: Any, tool: str) -> dict[str, Any]:
    with pytest.raises(MCPError) as info:
        await client.call_tool(tool, {"city": "Cairo"})
    return {"code": info.value.code, "message": info.value.message, "data": info.value.data}


async def test_each_principal_sees_and_calls_only_what_it_is_granted(
    backends: Backends, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="xds_control.aggregator.audit")
    async with auth_stack(backends, tmp_path) as stack:
        ops = {"authorization": f"Bearer {stack.token('alice', groups=['ops'])}"}
        planner = {"authorization": f"Bearer {stack.token('bob', scope='calendar')}"}
        nobody = {"authorization": f"Bearer {stack.token('carol')}"}
        for mode in FAMILIES:
            async with mcp_client(stack.url, mode, headers=ops) as client:
                seen = await _names(client)
                assert seen["tools"] and all(n.startswith("weather_") for n in seen["tools"]), seen
                assert seen["resources"]  # resources: ["*"]
                assert seen["prompts"] == []  # no rule grants a prompt
                denied = await _error(client, "calendar_list_events")
                unknown = await _error(client, "calendar_no_such_tool")
                assert denied["code"] == unknown["code"]
                assert denied["message"].replace("calendar_list_events", "X") == unknown["message"].replace(
                    "calendar_no_such_tool", "X"
                )
                assert (await client.call_tool("weather_get_current_conditions", {"city": "Lima"})).content
            async with mcp_client(stack.url, mode, headers=planner) as client:
                seen = await _names(client)
                assert seen["tools"] and all(n.startswith("calendar_list_") for n in seen["tools"]), seen
                assert seen["resources"] == [] and seen["prompts"] == []
                result = await client.call_tool("calendar_list_events", {"date": "2026-01-05"})
                assert "Standup" in result.content[0].text
            async with mcp_client(stack.url, mode, headers=nobody) as client:  # default: deny
                assert await _names(client) == {"tools": [], "resources": [], "prompts": []}
        audit = [r.__dict__ for r in caplog.records if r.name == "xds_control.aggregator.audit"]
        assert {(a["principal"], a["exposed_name"], a["outcome"], a["backend"]) for a in audit} >= {
            ("alice", "weather_get_current_conditions", "ok", "weather"),
            ("alice", "calendar_list_events", "denied", ""),
            ("bob", "calendar_list_events", "ok", "calendar"),
        }
        assert all(a["method"] == "tools/call" and a["duration_ms"] >= 0 for a in audit)
        assert not any("Bearer" in r.getMessage() or "eyJ" in r.getMessage() for r in caplog.records)


async def test_a_forged_identity_header_grants_nothing(backends: Backends, tmp_path: Path) -> None:
    async with auth_stack(backends, tmp_path) as stack:
        forged_claims = {"iss": "https://idp-file.test", "sub": "mallory", "groups": ["ops"], "scope": "calendar"}
        forged = {PAYLOAD_HEADER: payload_header(forged_claims), PRINCIPAL_HEADER: "alice"}
        # without a token: refused at Envoy, whatever the headers say
        answer = await post(stack.url, forged)
        assert answer.status_code == 401
        # with a valid token of a principal granted nothing: the forged copy is removed before jwt_authn runs
        token = {"authorization": f"Bearer {stack.token('mallory')}"}
        for mode in FAMILIES:
            async with mcp_client(stack.url, mode, headers={**token, **forged}) as client:
                assert [t.name for t in (await client.list_tools()).tools] == []
                with pytest.raises(MCPError):
                    await client.call_tool("weather_get_current_conditions", {"city": "Cairo"})
        # and straight at the aggregator (bypassing Envoy), a request without Envoy's header is 401
        direct = await post(stack.path.url)
        assert direct.status_code == 401
        assert direct.headers["www-authenticate"].startswith('Bearer resource_metadata="')


async def test_the_clients_token_never_reaches_a_backend(backends: Backends, tmp_path: Path) -> None:
    """The weather backend here accepts only the client's own token (re-read from a file on every request):
    were the token passed through, the call would work."""
    port, token_file = free_port(), tmp_path / "backend-token"
    token_file.write_text("not yet")
    with demo_backend("weather", port, "--token-file", str(token_file)):
        guarded = Backends({**backends.urls, "weather": f"http://127.0.0.1:{port}/mcp"}, backends.catalogs)
        async with auth_stack(guarded, tmp_path / "stack") as stack:
            token = stack.token("alice", groups=["ops"])
            token_file.write_text(token)
            async with mcp_client(stack.url, "legacy", headers={"authorization": f"Bearer {token}"}) as client:
                with pytest.raises(MCPError) as info:
                    await client.call_tool("weather_get_current_conditions", {"city": "Rome"})
                assert info.value.data["backend"] == "weather"  # the backend refused: it got no token of the client's


async def test_rate_limit_is_per_principal_with_429_and_retry_after(backends: Backends, tmp_path: Path) -> None:
    async with auth_stack(backends, tmp_path, rate_limit={"requests_per_second": 0.5, "burst": 3}) as stack:
        alice = {"authorization": f"Bearer {stack.token('alice', groups=['ops'])}"}
        bob = {"authorization": f"Bearer {stack.token('bob', groups=['ops'])}"}
        listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": MODERN_ENVELOPE}}
        headers = {**MODERN_HEADERS, "mcp-method": "tools/list"}
        statuses = [(await post(stack.url, {**headers, **alice}, listing)).status_code for _ in range(5)]
        assert statuses[:3] == [200, 200, 200] and statuses[3:] == [429, 429], statuses
        limited = await post(stack.url, {**headers, **alice}, listing)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert (await post(stack.url, {**headers, **bob}, listing)).status_code == 200  # bob has his own bucket
        async with httpx2.AsyncClient(trust_env=False) as http:  # the metadata is never limited
            for _ in range(6):
                answer = await http.get(f"{stack.base}/.well-known/oauth-protected-resource/mcp")
                assert answer.status_code == 200


async def test_a_legacy_session_serves_only_the_principal_that_opened_it(backends: Backends, tmp_path: Path) -> None:
    """Another principal (another subject, or the same subject from another issuer) naming the session is told what
    a made-up session id is told, for a request, its GET stream and its DELETE; the owner goes on unharmed."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}  # fmt: skip
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    accept = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
    async with auth_stack(backends, tmp_path) as stack, httpx2.AsyncClient(trust_env=False, timeout=30) as http:

        def bearer(token: str) -> dict[str, str]:
            return {**accept, "authorization": f"Bearer {token}", "mcp-protocol-version": "2025-11-25"}

        alice = bearer(stack.token("alice", groups=["ops"]))
        opened = await http.post(stack.url, json=init, headers=alice)
        assert opened.status_code == 200
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        assert (await http.post(stack.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                                headers={**alice, **session})).status_code == 202  # fmt: skip
        bob = bearer(stack.token("bob", groups=["ops"]))
        other_issuer = bearer(stack.token("alice", issuer=stack.url_issuer, groups=["ops"]))
        made_up = await http.post(stack.url, json=listing, headers={**bob, "mcp-session-id": "0" * 32})
        assert made_up.status_code == 404
        foreign_before = stack.path.aggregator.endpoint.sessions.get(session["mcp-session-id"])
        for stranger in (bob, other_issuer):
            answer = await http.post(stack.url, json=listing, headers={**stranger, **session})
            assert (answer.status_code, answer.json()) == (404, made_up.json())
            stream = await http.get(stack.url, headers={**stranger, **session, "accept": "text/event-stream"})
            assert stream.status_code == 404
            ended = await http.delete(stack.url, headers={**stranger, **session})
            assert ended.status_code == 404
        assert stack.path.aggregator.endpoint.sessions.get(session["mcp-session-id"]) is foreign_before
        mine = await http.post(stack.url, json=listing, headers={**alice, **session})
        assert mine.status_code == 200 and "weather_get_current_conditions" in mine.text
        assert (await http.delete(stack.url, headers={**alice, **session})).status_code == 200
        # tokens without the principal claim: nobody is known to be the same one, so only that very token may use it
        first = bearer(stack.token("", groups=["ops"], jti="first"))
        opened = await http.post(stack.url, json=init, headers=first)
        assert opened.status_code == 200
        session = {"mcp-session-id": opened.headers["mcp-session-id"]}
        another = bearer(stack.token("", groups=["ops"], jti="another"))
        answer = await http.post(stack.url, json=listing, headers={**another, **session})
        assert (answer.status_code, answer.json()) == (404, made_up.json())
        assert (await http.post(stack.url, json=listing, headers={**first, **session})).status_code == 200
