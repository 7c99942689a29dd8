"""What the control plane pushes for `auth`, `rate_limit`: pure resource checks (the Envoy tests prove the
behaviour; these pin the shape and what must never change: the open gateway, the egress listener)."""

from __future__ import annotations

import json
from typing import Any

from xds_control.auth.identity import IDENTITY_HEADERS, PAYLOAD_HEADER, PRINCIPAL_HEADER
from xds_control.config import parse_config
from xds_control.view import ViewStore
from xds_control.xds import typeurls as t
from xds_control.xds.resources import build_resources
from xds_control.xds.snapshot import SnapshotBuilder

BACKENDS = [{"name": "weather", "url": "http://127.0.0.1:9001/mcp"}]
AUTH = {"issuers": [{"issuer": "https://idp.test", "jwks_file": "/k/jwks.json"}]}
JWKS = '{"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]}'


def _hcm(resources: dict[str, Any], listener: str) -> dict[str, Any]:
    spec = resources[t.LISTENER][listener]
    return spec["filter_chains"][0]["filters"][0]["typed_config"]


def _filters(resources: dict[str, Any], listener: str) -> list[str]:
    return [f["name"] for f in _hcm(resources, listener)["http_filters"]]


def test_without_auth_the_listeners_are_the_open_gateways() -> None:
    resources = build_resources(ViewStore(parse_config({"backends": BACKENDS})).current)
    assert _filters(resources, t.PUBLIC_LISTENER) == [
        "envoy.filters.http.stateful_session",
        "envoy.filters.http.router",
    ]
    assert "early_header_mutation_extensions" not in _hcm(resources, t.PUBLIC_LISTENER)
    routes = resources[t.ROUTE][t.PUBLIC_ROUTES]["virtual_hosts"][0]["routes"]
    assert [r["match"]["path"] for r in routes] == ["/mcp"]


def test_with_auth_every_request_is_verified_and_the_identity_headers_are_stripped_first() -> None:
    store = ViewStore(parse_config({"backends": BACKENDS, "listener": {"expose_backends": True}, "auth": AUTH,
                                    "rate_limit": {"requests_per_second": 2, "burst": 5}}))  # fmt: skip
    store.set_keys({"/k/jwks.json": JWKS})
    resources = build_resources(store.current)
    public = _hcm(resources, t.PUBLIC_LISTENER)
    assert _filters(resources, t.PUBLIC_LISTENER) == [
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.stateful_session",
        "envoy.filters.http.router",
    ]
    removed = [m["remove"] for m in public["early_header_mutation_extensions"][0]["typed_config"]["mutations"]]
    assert sorted(removed) == sorted(IDENTITY_HEADERS)
    jwt = public["http_filters"][0]["typed_config"]
    provider = jwt["providers"]["issuer-0"]
    assert provider["forward"] is False and provider["forward_payload_header"] == PAYLOAD_HEADER
    assert provider["from_headers"] == [{"name": "authorization", "value_prefix": "Bearer "}]  # never the query
    assert provider["audiences"] == ["http://127.0.0.1:10000/mcp"] and provider["require_expiration"] is True
    assert provider["local_jwks"] == {"inline_string": JWKS}
    assert jwt["rules"][0] == {"match": {"prefix": "/.well-known/oauth-protected-resource"}}
    assert jwt["rules"][1]["requires"] == {"provider_name": "issuer-0"}
    # the egress listener (the aggregator's way to backends) is untouched
    assert _filters(resources, t.EGRESS_LISTENER) == [
        "envoy.filters.http.stateful_session",
        "envoy.filters.http.router",
    ]
    routes = resources[t.ROUTE][t.PUBLIC_ROUTES]["virtual_hosts"][0]["routes"]
    metadata = [r for r in routes if "direct_response" in r]
    assert [r["match"]["path"] for r in metadata] == [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ]
    document = json.loads(metadata[0]["direct_response"]["body"]["inline_string"])
    assert document == {
        "resource": "http://127.0.0.1:10000/mcp",
        "authorization_servers": ["https://idp.test"],
        "bearer_methods_supported": ["header"],
    }
    limited = [r for r in routes if "route" in r]
    assert {r["match"]["path"] for r in limited} == {"/mcp", "/backends/weather/mcp"}
    for route in limited:
        limit = route["typed_per_filter_config"]["envoy.filters.http.local_ratelimit"]
        assert limit["token_bucket"] == {"max_tokens": 5, "tokens_per_fill": 1, "fill_interval": "0.500s"}
        assert limit["response_headers_to_add"][0]["header"] == {"key": "retry-after", "value": "1"}
    assert all("typed_per_filter_config" not in r for r in metadata)  # the metadata is never limited


def _provider(sections: dict[str, Any]) -> dict[str, Any]:
    store = ViewStore(parse_config({"backends": BACKENDS, **sections}))
    store.set_keys({"/k/jwks.json": JWKS})
    jwt = _hcm(build_resources(store.current), t.PUBLIC_LISTENER)["http_filters"][0]["typed_config"]
    provider: dict[str, Any] = jwt["providers"]["issuer-0"]
    return provider


def test_the_principal_header_is_set_only_for_its_readers() -> None:
    """The rate limiter keys on it and the refusal log prints it for a 403 of the scope check or a 429; without
    either nobody reads it, and the verified payload alone goes to the aggregator."""
    principal = [{"header_name": PRINCIPAL_HEADER, "claim_name": "sub"}]
    plain = _provider({"auth": AUTH})
    assert "claim_to_headers" not in plain and "payload_in_metadata" not in plain
    assert plain["forward_payload_header"] == PAYLOAD_HEADER
    limited = _provider({"auth": AUTH, "rate_limit": {"requests_per_second": 2, "burst": 5}})
    assert limited["claim_to_headers"] == principal
    scoped = _provider({"auth": {**AUTH, "required_scopes": ["mcp"]}})
    assert scoped["claim_to_headers"] == principal and scoped["payload_in_metadata"]


def test_a_resource_with_its_own_path_has_its_metadata_url() -> None:
    config = parse_config({"auth": {**AUTH, "resource": "https://gw.example.com/tenant/mcp"}})
    assert config.resource_metadata_url() == "https://gw.example.com/.well-known/oauth-protected-resource/tenant/mcp"
    routes = build_resources(ViewStore(config).current)[t.ROUTE][t.PUBLIC_ROUTES]["virtual_hosts"][0]["routes"]
    assert "/.well-known/oauth-protected-resource/tenant/mcp" in [r["match"].get("path") for r in routes]


def test_new_keys_rebuild_the_listener_with_the_same_config() -> None:
    """Regression: the snapshot builder took "same config object" for "only health changed"."""
    store = ViewStore(parse_config({"backends": BACKENDS, "auth": AUTH}))
    store.set_keys({"/k/jwks.json": JWKS})
    builder = SnapshotBuilder()
    first = builder.build(store.current)
    rotated = JWKS.replace('"x": "a"', '"x": "c"')
    store.set_keys({"/k/jwks.json": rotated})
    second = builder.build(store.current)
    assert first.types[t.LISTENER].version != second.types[t.LISTENER].version
    assert first.types[t.CLUSTER].version == second.types[t.CLUSTER].version
