"""The request classifier (aggregator/inbound.py), pure: property tests against arbitrary JSON and headers, and
its transport check held to the SDK's own."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from mcp.shared.inbound import InboundModernRoute, classify_inbound_request
from starlette.requests import Request

from tests.aggregator.support import MODERN, MODERN_ENVELOPE
from xds_control.aggregator.inbound import LIST_METHODS, Plain, Rules, classify, host_allowed

HOSTS = ("127.0.0.1:18080", "localhost:18080", "gw.example", "gw.example:*")
RULES = Rules(HOSTS, tuple(f"http://{h}" for h in HOSTS))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=20,
)
methods = st.sampled_from(["tools/call", "tools/list", "prompts/list", "initialize", "ping", "resources/read"])
params = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=10) | json_values,
        "arguments": st.dictionaries(st.text(max_size=5), json_values, max_size=3) | json_values,
        "cursor": st.text(max_size=10) | json_values,
        "_meta": st.just(MODERN_ENVELOPE) | st.dictionaries(st.text(max_size=12), json_values, max_size=3),
        "other": json_values,
    },
)
requests = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0") | json_values},
    optional={
        "id": st.integers() | st.text(max_size=5) | json_values,
        "method": methods | json_values,
        "params": params | json_values,
    },
)
bodies = requests | st.lists(requests, max_size=3) | json_values
header_values = st.sampled_from(
    [
        *("application/json", "application/json, text/event-stream", "text/html", "*/*", MODERN, "2025-11-25", "", "x"),
        *HOSTS,
        *("evil.example", "gw.example:443", "http://gw.example", "http://evil.example"),
    ]
)
header_names = st.sampled_from(
    ["host", "origin", "accept", "content-type", "mcp-protocol-version", "mcp-session-id", "mcp-method", "mcp-name"]
)
headers = st.lists(st.tuples(header_names, header_values), max_size=8)


def scope_of(pairs: list[tuple[str, str]], method: str = "POST") -> dict[str, Any]:
    raw = [(k.encode(), v.encode("latin-1")) for k, v in pairs]
    return {"type": "http", "method": method, "path": "/mcp", "headers": raw}


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, pairs=headers, raw=st.booleans(), method=st.sampled_from(["POST", "GET", "DELETE"]))
def test_any_request_is_classified_without_raising_and_plain_only_when_the_sdk_would_accept_it(
    body: Any, pairs: list[tuple[str, str]], raw: bool, method: str
) -> None:
    data = json.dumps(body).encode() if not raw else json.dumps(body).encode()[:7]
    verdict = classify(scope_of(pairs, method), data, RULES)
    plain = verdict.plain
    if plain is None:
        return
    assert isinstance(plain, Plain) and method == "POST"
    message = json.loads(data)
    assert isinstance(message, dict) and message["method"] in LIST_METHODS | {"tools/call"}
    assert isinstance(plain.id, int | str) and not isinstance(plain.id, bool)
    assert "progressToken" not in plain.params.get("_meta", {})
    folded = dict(reversed(pairs))
    if plain.modern:
        assert classify_inbound_request(message, headers=folded).__class__ is InboundModernRoute
        assert folded.get("mcp-session-id") is None
    else:
        assert plain.session_id == folded.get("mcp-session-id")


@settings(max_examples=300)
@given(
    host=st.none() | header_values | st.text(max_size=20),
    origin=st.none() | header_values | st.text(max_size=20),
    content_type=st.none() | header_values | st.text(max_size=20),
)
def test_the_transport_check_is_the_sdks(host: str | None, origin: str | None, content_type: str | None) -> None:
    pairs = [(k, v) for k, v in (("host", host), ("origin", origin), ("content-type", content_type)) if v is not None]
    try:
        scope = scope_of(pairs)
    except UnicodeEncodeError:
        return
    settings_ = TransportSecuritySettings(
        allowed_hosts=list(RULES.allowed_hosts), allowed_origins=list(RULES.allowed_origins)
    )
    rejected = asyncio.run(TransportSecurityMiddleware(settings_).validate_request(Request(scope), is_post=True))
    assert host_allowed(RULES, host or None, origin or None, content_type) == (rejected is None)


def test_a_plain_modern_call_and_what_keeps_a_request_from_being_plain() -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "t", "arguments": {}, "_meta": MODERN_ENVELOPE},
    }
    good = [("host", "gw.example"), ("content-type", "application/json"), ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", MODERN), ("mcp-method", "tools/call"), ("mcp-name", "t")]  # fmt: skip
    assert classify(scope_of(good), json.dumps(call).encode(), RULES).plain is not None
    for case, change in {
        "unknown host": [("host", "evil.example")],
        "no SSE in Accept": [("accept", "application/json")],
        "header and body disagree": [("mcp-name", "u")],
    }.items():
        changed = dict(good) | dict(change)
        assert classify(scope_of(list(changed.items())), json.dumps(call).encode(), RULES).plain is None, case
    assert classify(scope_of([*good, ("mcp-method", "tools/call")]), json.dumps(call).encode(), RULES).plain is None
    with_progress = {**call, "params": {**call["params"], "_meta": {**MODERN_ENVELOPE, "progressToken": 1}}}
    assert classify(scope_of(good), json.dumps(with_progress).encode(), RULES).plain is None


def test_what_an_initialize_and_the_next_messages_tell_the_session_table() -> None:
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
    assert classify(scope_of([]), json.dumps(init).encode(), RULES).opens
    in_session = [("mcp-session-id", "s1")]
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert not classify(scope_of(in_session), json.dumps(ping).encode(), RULES).settles
    done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert classify(scope_of(in_session), json.dumps(done).encode(), RULES).settles
    assert classify(scope_of(in_session, "GET"), b"", RULES).settles
