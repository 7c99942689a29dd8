"""Authentication at a real Envoy: the MCP authorization spec on the wire (RFC 9728 metadata, 401/403 with
their challenges), every kind of bad token refused before the aggregator, good tokens of two issuers (RS256
from a JWKS file, ES256 from a JWKS URL) through real SDK clients of both families, key rotation."""

from __future__ import annotations

from pathlib import Path

import httpx2
import jwt
import pytest
from mcp.shared.auth import ProtectedResourceMetadata
from prometheus_client import REGISTRY

from tests.aggregator.support import FAMILIES, mcp_client
from tests.auth.conftest import Backends, auth_stack
from tests.auth.support import ISSUER_FILE, Issuer, now, post, unsigned_token
from tests.support.waiting import async_wait_until
from xds_control.auth import devtoken

pytestmark = pytest.mark.integration


def unverified() -> float:
    return REGISTRY.get_sample_value("xds_control_aggregator_unverified_requests_total") or 0.0


async def test_metadata_401_challenges_and_good_tokens_of_both_issuers(backends: Backends, tmp_path: Path) -> None:
    async with auth_stack(backends, tmp_path) as stack:
        metadata_url = f"{stack.base}/.well-known/oauth-protected-resource/mcp"
        async with httpx2.AsyncClient(trust_env=False) as http:
            for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
                answer = await http.get(stack.base + path)  # no token needed
                assert answer.status_code == 200
                metadata = ProtectedResourceMetadata.model_validate_json(answer.text)
                assert str(metadata.resource) == stack.audience
                assert [str(s).rstrip("/") for s in metadata.authorization_servers] == [
                    "https://idp-file.test",
                    "https://idp-url.test",
                ]
                assert metadata.bearer_methods_supported == ["header"]
                assert metadata.scopes_supported == ["mcp", "calendar"]

        before = unverified()
        missing = await post(stack.url)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == f'Bearer resource_metadata="{metadata_url}"'

        aud, iss, t = stack.audience, ISSUER_FILE, now()
        key = stack.file_issuer.key
        stranger = devtoken.new_key("RS256", kid=key.kid)  # the same kid, another key: a bad signature
        public_pem = key.private.public_key().public_bytes(
            devtoken.serialization.Encoding.PEM, devtoken.serialization.PublicFormat.SubjectPublicKeyInfo
        )
        bad_tokens = {
            "expired": stack.token(exp=t - 600, iat=t - 7200, nbf=t - 7200),
            "not yet valid": stack.token(nbf=t + 3600),
            "wrong issuer": Issuer("https://evil.test", "RS256").token(aud),
            "wrong issuer, known key": key.sign(devtoken.claims(sub="alice", audience=aud, issuer="https://evil.test")),
            "wrong audience": key.sign(devtoken.claims(sub="alice", audience="https://other.test/mcp", issuer=iss)),
            "bad signature": stranger.sign(devtoken.claims(sub="alice", audience=aud, issuer=iss)),
            "alg none": unsigned_token(devtoken.claims(sub="alice", audience=aud, issuer=iss), {"alg": "none"}),
            "HS256 with the public key": _hs256(devtoken.claims(sub="alice", audience=aud, issuer=iss), public_pem, key.kid),
            "no exp": key.sign({"iss": iss, "aud": aud, "sub": "alice"}),
            "garbage": "not.a.jwt",
            "thousands of claims, bad signature": stranger.sign(
                {**devtoken.claims(sub="alice", audience=aud, issuer=iss), **{f"c{i}": i for i in range(2000)}}
            ),
        }  # fmt: skip
        for label, token in bad_tokens.items():
            answer = await post(stack.url, {"authorization": f"Bearer {token}"})
            assert answer.status_code == 401, label
            assert answer.headers["www-authenticate"] == (
                f'Bearer resource_metadata="{metadata_url}", error="invalid_token"'
            ), label
            assert token not in answer.text, label
        for header in ("Bearer", "Basic YWxpY2U6eA==", "Bearer " + "A" * 100, "bearer  x.y.z"):
            answer = await post(stack.url, {"authorization": header})
            assert answer.status_code == 401, header
        huge = await post(stack.url, {"authorization": "Bearer " + "A" * (1024 * 1024)})
        assert huge.status_code in (401, 431)  # Envoy refuses an oversized header block before any filter
        # A good token anywhere but the Authorization header (the MCP authorization spec: never in the query)
        good = stack.token(groups=["ops"])
        for where in ("?access_token=", "?token="):
            answer = await post(stack.url + where + good)
            assert answer.status_code == 401, where
        assert unverified() == before  # none of them reached the aggregator

        for issuer in (stack.file_issuer, stack.url_issuer):
            headers = {"authorization": f"Bearer {stack.token(issuer=issuer, groups=['ops'])}"}
            for mode in FAMILIES:
                async with mcp_client(stack.url, mode, headers=headers) as client:
                    tools = [t.name for t in (await client.list_tools()).tools]
                    assert tools and all(name.startswith("weather_") for name in tools)
                    result = await client.call_tool("weather_get_current_conditions", {"city": "Cairo"})
                    assert result.content[0].text.startswith("Cairo:")


def _hs256(claims: dict[str, object], secret: bytes, kid: str) -> str:
    """The classic confusion attack: HMAC-signed with the RSA public key as the secret (PyJWT refuses to do it,
    so it is signed by hand)."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = (
        f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT', 'kid': kid}).encode())}.{b64(json.dumps(claims).encode())}"
    )
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


async def test_required_scope_is_403_insufficient_scope(backends: Backends, tmp_path: Path) -> None:
    async with auth_stack(backends, tmp_path, auth={"required_scopes": ["mcp"]}) as stack:
        metadata_url = f"{stack.base}/.well-known/oauth-protected-resource/mcp"
        answer = await post(stack.url, {"authorization": f"Bearer {stack.token(scope='calendar')}"})
        assert answer.status_code == 403, (answer.text, dict(answer.headers))
        assert answer.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{metadata_url}", error="insufficient_scope", scope="mcp"'
        )
        assert (
            await post(stack.url, {"authorization": f"Bearer {stack.token(scope='calendar mcp')}"})
        ).status_code == 200
        async with httpx2.AsyncClient(trust_env=False) as http:  # the metadata needs neither token nor scope
            assert (await http.get(metadata_url)).status_code == 200


async def test_a_jwks_file_rotation_takes_effect_without_a_restart(backends: Backends, tmp_path: Path) -> None:
    async with auth_stack(backends, tmp_path) as stack:
        old = stack.token(groups=["ops"])
        async with mcp_client(stack.url, "legacy", headers={"authorization": f"Bearer {old}"}) as open_session:
            assert (await open_session.list_tools()).tools

            rotated = devtoken.new_key("ES256")
            stack.jwks_file.write_text(devtoken.jwks(stack.file_issuer.key, rotated))  # overlap: both keys
            new = rotated.sign(
                devtoken.claims(sub="alice", audience=stack.audience, issuer=ISSUER_FILE, groups=["ops"])
            )

            async def accepted(token: str) -> bool:
                return (await post(stack.url, {"authorization": f"Bearer {token}"})).status_code == 200

            await async_wait_until(lambda: accepted(new), timeout=15, what="the added key to reach Envoy")
            # the session opened before the listener update goes on (Envoy drains, it does not cut)
            result = await open_session.call_tool("weather_get_current_conditions", {"city": "Oslo"})
            assert result.content[0].text.startswith("Oslo:")

            stack.jwks_file.write_text(devtoken.jwks(rotated))  # the old key retired

            async def refused_old() -> bool:
                return (await post(stack.url, {"authorization": f"Bearer {old}"})).status_code == 401

            await async_wait_until(refused_old, timeout=15, what="the retired key to leave Envoy")
            assert await accepted(new)


def test_pyjwt_refuses_the_confusion_attack_itself() -> None:
    """(The gateway does not rely on it: Envoy verifies. This pins that the hand-made token above is needed.)"""
    key = devtoken.new_key("RS256")
    with pytest.raises(jwt.exceptions.InvalidKeyError):
        jwt.encode({"a": 1}, key.private.public_key().public_bytes(
            devtoken.serialization.Encoding.PEM, devtoken.serialization.PublicFormat.SubjectPublicKeyInfo
        ), algorithm="HS256")  # fmt: skip
