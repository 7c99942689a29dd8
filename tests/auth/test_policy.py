"""The pure decisions: claims -> grants (policy.py), the forwarded identity (identity.py), JWKS checks,
the config sections, and every page of a filtered list (access.py over a real merged catalog)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest

from xds_control.aggregator.access import ANONYMOUS, PRINCIPAL_KEY, Access, Principal
from xds_control.aggregator.catalog import merge_catalog
from xds_control.aggregator.pagination import CursorError, page
from xds_control.auth import devtoken
from xds_control.auth.identity import PAYLOAD_HEADER, claims_of, identity_of
from xds_control.auth.jwks import check_jwks, read_keys, refresh_keys
from xds_control.auth.policy import EVERYTHING, MAX_NAME_CHARS, Patterns, Policy, claim_values
from xds_control.config import AuthorizationConfig, parse_config
from xds_control.errors import ConfigError
from xds_control.view import BackendState, BackendStatus, Catalog, ViewStore

AUTH = {"issuers": [{"issuer": "https://idp.test", "jwks_url": "https://idp.test/jwks.json"}]}


def policy(rules: list[dict[str, Any]], default: str = "deny") -> Policy:
    return Policy(AuthorizationConfig.model_validate({"default": default, "rules": rules}))


OPS = {
    "name": "ops",
    "match": {"claim": "groups", "any_of": ["ops"]},
    "tools": ["weather_*"],
    "resources": ["file:///ops/*"],
}
READ = {
    "name": "read",
    "match": {"claim": "scope", "any_of": ["read"]},
    "tools": ["*_get", "notes_?"],
    "prompts": ["*"],
}


def test_globs_are_star_and_question_mark_and_everything_else_is_literal() -> None:
    p = Patterns(["weather_*", "a?c", "x.y", "[ab]"])
    assert p.match("weather_") and p.match("weather_get_forecast")
    assert p.match("abc") and not p.match("ac") and not p.match("abbc")
    assert p.match("x.y") and not p.match("xzy")  # a dot is a dot
    assert p.match("[ab]") and not p.match("a")  # brackets are literal
    assert not p.match("Weather_x")  # case matters
    assert not Patterns([]).match("anything")
    assert Patterns(["*"]).match("x" * (MAX_NAME_CHARS + 10))  # everything is everything
    assert not p.match("weather_" + "x" * MAX_NAME_CHARS)  # past the bound: not granted


def test_rules_union_default_deny_and_allow() -> None:
    rules = policy([OPS, READ])
    both = rules.grant({"groups": ["ops", "dev"], "scope": "write read"})
    assert both.rules == ("ops", "read")
    assert both.allows("tools", "weather_x") and both.allows("tools", "notes_get") and both.allows("tools", "notes_1")
    assert both.allows("prompts", "anything") and both.allows("resources", "file:///ops/a")
    assert both.allows("resource_templates", "file:///ops/{name}")
    assert not both.allows("resources", "file:///other") and not both.allows("tools", "calendar_x")
    ops_only = rules.grant({"groups": "ops"})  # a string claim is one value
    assert ops_only.rules == ("ops",) and not ops_only.allows("prompts", "p")
    nothing = rules.grant({"groups": ["dev"], "scope": "readonly"})  # "read" is a word of scope, not a prefix
    assert nothing.rules == () and not nothing.allows("tools", "weather_x")
    allowing = policy([OPS], default="allow").grant({"sub": "x"})
    assert allowing.everything and allowing.allows("tools", "calendar_x")
    assert allowing.key != EVERYTHING.key
    assert Policy(None).grant({}) is EVERYTHING


def test_grant_keys_are_stable_and_change_with_the_rules() -> None:
    a, b = policy([OPS, READ]), policy([OPS, READ])
    claims = {"groups": ["ops"]}
    assert a.grant(claims).key == b.grant(claims).key
    assert a.grant(claims) is a.grant({"groups": ["ops"], "sub": "other"})  # one grant per matched rule set
    assert a.grant(claims).key != a.grant({"scope": "read"}).key
    changed = policy([{**OPS, "tools": ["weather_get_*"]}, READ])
    assert changed.grant(claims).key != a.grant(claims).key  # a reload never serves an old page


def test_claim_values_are_bounded_and_typed() -> None:
    assert claim_values({"g": ["a", 1, True, None, {"x": 1}, ""]}, "g") == ["a", "1", "true"]
    assert claim_values({"scope": "a b  c"}, "scope") == ["a", "b", "c"]  # empty words dropped
    assert len(claim_values({"g": [str(i) for i in range(100_000)]}, "g")) == 1024
    assert claim_values({"g": "x" * 5000}, "g") == []
    assert claim_values({}, "g") == []
    many_claims = {f"c{i}": i for i in range(10_000)} | {"groups": ["ops"]}
    started = time.perf_counter()
    assert policy([OPS]).grant(many_claims).rules == ("ops",)
    assert time.perf_counter() - started < 5  # (a bound on work, not a figure: it is a dict lookup)


def _header(claims: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")


def test_the_forwarded_payload_is_read_defensively() -> None:
    assert claims_of(_header({"sub": "a"})) == {"sub": "a"}
    assert claims_of(_header(["not", "an", "object"])) is None
    assert claims_of("!!!") is None and claims_of(None) is None and claims_of("") is None
    assert claims_of("A" * (64 * 1024 + 1)) is None
    assert claims_of(_header("[" * 100_000)) is None  # deep nesting: no RecursionError escapes
    who = identity_of(_header({"sub": "eve\x1b[31m\n", "groups": ["ops"]}), "sub")
    assert who is not None and who.principal == "eve\\x1b[31m\\x0a"
    assert identity_of(_header({"groups": []}), "sub").principal == "-"  # type: ignore[union-attr]


def test_a_sessions_owner_is_the_exact_issuer_and_principal_claim() -> None:
    def owner(claims: dict[str, Any]) -> bytes:
        who = identity_of(_header(claims), "sub")
        assert who is not None
        return who.owner

    alice = owner({"iss": "https://a.test", "sub": "alice", "groups": ["ops"]})
    assert alice == owner({"iss": "https://a.test", "sub": "alice", "groups": [], "exp": 1})  # other claims: same
    long = "x" * 300  # beyond what the logged name keeps: two such subjects still differ
    others = [{"iss": "https://b.test", "sub": "alice"}, {"iss": "https://a.test", "sub": "alicE"},
              {"iss": "https://a.test", "sub": long + "1"}, {"iss": "https://a.test", "sub": long + "2"},
              {"iss": "https://a.test"}, {"sub": "alice"}]  # fmt: skip
    owners = {alice, *(owner(claims) for claims in others)}
    assert len(owners) == 1 + len(others) and ANONYMOUS.owner not in owners
    # without the principal claim nobody is known to be the same one: only the very same token owns alike
    anonymous = {"iss": "https://a.test", "groups": ["ops"], "iat": 1}
    assert owner(anonymous) == owner(dict(anonymous)) != owner({**anonymous, "iat": 2})
    assert owner({"iss": "https://a.test", "sub": ""}) != owner({"iss": "https://a.test", "sub": "", "iat": 2})


def test_access_reads_identity_only_with_auth_and_only_from_envoys_header() -> None:
    open_gateway = Access(parse_config({}))
    forged = {"headers": [(PAYLOAD_HEADER.encode(), _header({"sub": "x", "groups": ["ops"]}).encode())]}
    assert open_gateway.principal(forged) is ANONYMOUS  # nothing is read without auth
    guarded = Access(parse_config({"auth": AUTH, "authorization": {"rules": [OPS]}}))
    assert guarded.principal({"headers": []}) is None
    assert guarded.principal({"headers": [(b"x-other", b"1")]}) is None
    principal = guarded.principal(forged)
    assert principal is not None and principal.name == "x" and principal.grant.rules == ("ops",)
    assert guarded.challenge.startswith(b'Bearer resource_metadata="http://127.0.0.1:10000/.well-known/')
    assert PRINCIPAL_KEY not in forged


def _status(name: str, tools: int) -> BackendStatus:
    catalog = Catalog.build(
        tools=[{"name": f"t{i:03d}", "inputSchema": {"type": "object"}} for i in range(tools)],
        resources=[{"uri": f"file:///{name}/{i}", "name": str(i)} for i in range(3)],
    )
    return BackendStatus(name=name, state=BackendState.HEALTHY, catalog=catalog)


def test_every_page_of_a_filtered_list_holds_only_granted_items() -> None:
    config = parse_config({"backends": [{"name": "a", "url": "http://127.0.0.1:1/mcp"},
                                        {"name": "b", "url": "http://127.0.0.1:2/mcp"}]})  # fmt: skip
    catalog = merge_catalog(config, {"a": _status("a", 250), "b": _status("b", 250)})
    access = Access(config)
    grant = policy([{"name": "a", "match": {"claim": "sub", "any_of": ["x"]}, "tools": ["a_t1*"]}]).grant({"sub": "x"})
    filtered = access.visible(catalog, "tools", grant)
    assert access.visible(catalog, "tools", grant) is filtered  # kept while the catalog is current
    names, cursor = [], None
    while True:
        items, cursor = page(filtered, cursor, 30)
        names += [i["name"] for i in items]
        if cursor is None:
            break
    assert names == [f"a_t{i:03d}" for i in range(100, 200)]
    assert filtered.hash != catalog.lists["tools"].hash
    _, first_cursor = page(catalog.lists["tools"], None, 30)
    with pytest.raises(CursorError):  # a cursor of the full list is no cursor of the filtered one
        page(filtered, first_cursor, 30)
    assert access.visible(catalog, "tools", EVERYTHING) is catalog.lists["tools"]
    assert access.visible(catalog, "resources", grant).items == ()
    assert Principal("x", grant).grant.rule_label == "a"


def test_auth_sections_are_validated_with_field_paths() -> None:
    cases = {
        "auth.issuers.0": {"auth": {"issuers": [{"issuer": "https://i"}]}},
        "auth.issuers": {"auth": {"issuers": []}},
        "auth.resource": {"auth": {**AUTH, "resource": "ftp://x/mcp"}},
        "auth.required_scopes": {"auth": {**AUTH, "required_scopes": ['a"b']}},
        "auth.principal_claim": {"auth": {**AUTH, "principal_claim": "a b"}},
        "authorization": {"authorization": {"rules": []}},
        "rate_limit": {"rate_limit": {}},
        "rate_limit.requests_per_second": {"auth": AUTH, "rate_limit": {"requests_per_second": 0}},
        "authorization.rules.0.match.any_of": {
            "auth": AUTH, "authorization": {"rules": [{"name": "r", "match": {"claim": "g", "any_of": []}}]}
        },
    }  # fmt: skip
    for path, data in cases.items():
        with pytest.raises(ConfigError) as info:
            parse_config(data)
        assert path in [i.path for i in info.value.issues], (path, info.value.issues)


def test_jwks_files_must_hold_public_keys_only(tmp_path: Path) -> None:
    key = devtoken.new_key("RS256")
    assert check_jwks(devtoken.jwks(key)) is None
    assert check_jwks("{}") is not None and check_jwks("nope") is not None
    private = json.dumps({"keys": [{**key.public_jwk(), "d": "secret-part"}]})
    problem = check_jwks(private)
    assert problem is not None and "private" in problem and "secret-part" not in problem
    path = tmp_path / "jwks.json"
    path.write_text(private)
    config = parse_config({"auth": {"issuers": [{"issuer": "https://i", "jwks_file": str(path)}]}})
    with pytest.raises(ConfigError) as info:
        read_keys(config)
    assert info.value.issues[0].path == "auth.issuers.0.jwks_file" and "secret-part" not in str(info.value)


def test_a_bad_jwks_file_keeps_the_last_good_keys(tmp_path: Path) -> None:
    async def run() -> None:
        path = tmp_path / "jwks.json"
        good = devtoken.jwks(devtoken.new_key())
        path.write_text(good)
        config = parse_config({"auth": {"issuers": [{"issuer": "https://i", "jwks_file": str(path)}]}})
        store = ViewStore(config)
        store.set_keys(read_keys(config))
        version = store.version
        path.write_text('{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}')
        refresh_keys(config, store)
        assert store.current.keys[str(path)] == good and store.version == version
        newer = devtoken.jwks(devtoken.new_key())
        path.write_text(newer)
        refresh_keys(config, store)
        assert store.current.keys[str(path)] == newer and store.version == version + 1

    asyncio.run(run())


def test_a_reload_swaps_the_rules_for_the_next_request() -> None:
    header = {"headers": [(PAYLOAD_HEADER.encode(), _header({"sub": "x", "groups": ["ops"]}).encode())]}
    access = Access(parse_config({"auth": AUTH, "authorization": {"rules": [OPS]}}))
    before = access.principal(header)
    assert before is not None and before.grant.allows("tools", "weather_a")
    narrower = {**OPS, "tools": ["weather_get_*"]}
    access.apply_config(parse_config({"auth": AUTH, "authorization": {"rules": [narrower]}}))
    after = access.principal(header)
    assert (
        after is not None
        and not after.grant.allows("tools", "weather_a")
        and after.grant.allows("tools", "weather_get_x")
    )
    assert after.grant.key != before.grant.key  # the old grant's pages are never served to the new one
    access.apply_config(parse_config({}))  # auth removed: an open gateway again
    assert access.principal({"headers": []}) is ANONYMOUS
