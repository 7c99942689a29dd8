"""Property-based tests of the config loader: whatever the file holds, the loader answers a `Config` or a
`ConfigError` whose text is bounded, never echoes a secret, and never expands an alias."""

from __future__ import annotations

import string
import time
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xds_control.config import MAX_YAML_NODES, Config, dump_config, parse_config, parse_config_text
from xds_control.errors import ConfigError

SECTIONS = ("listener", "egress", "envoy", "control_plane", "aggregator", "health", "circuit_breaker", "backends")
FIELDS = ("address", "port", "interval", "timeout", "name", "url", "endpoints", "auth", "token_env", "xds", "admin")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=300),
)
json_like = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=20)), children, max_size=5),
    ),
    max_leaves=30,
)
documents = st.dictionaries(st.one_of(st.sampled_from(SECTIONS), st.text(max_size=30)), json_like, max_size=6)
# Secrets shaped like what leaks: URL user info and query values.
secret = st.text(alphabet=string.ascii_letters + string.digits, min_size=12, max_size=40).map(lambda s: f"S3CR3T{s}")

ISSUE_TEXT_BOUND = 1200  # one issue's line: path (<=120 + marker), message (<=400 + marker), preview (<=60 + marker)


def outcome(load: Any) -> Config | ConfigError:
    try:
        return load()
    except ConfigError as exc:
        return exc


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents)
def test_any_document_gives_a_config_or_a_bounded_config_error(data: dict[str, Any]) -> None:
    result = outcome(lambda: parse_config(data))
    if isinstance(result, ConfigError):
        assert result.issues
        for issue in result.issues:
            assert len(str(issue)) < ISSUE_TEXT_BOUND
    else:
        assert isinstance(result, Config)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000))
def test_any_text_gives_a_config_or_a_config_error_never_another_exception(text: str) -> None:
    result = outcome(lambda: parse_config_text(text))
    assert isinstance(result, Config | ConfigError)
    if isinstance(result, ConfigError):
        assert all(len(str(issue)) < ISSUE_TEXT_BOUND for issue in result.issues)


@settings(max_examples=200, deadline=None)
@given(
    user=secret,
    password=secret,
    query=secret,
    where=st.sampled_from(["url", "endpoints", "listener.address", "unknown"]),
)
def test_an_error_never_echoes_a_urls_user_info_or_query(user: str, password: str, query: str, where: str) -> None:
    bad_url = f"http://{user}:{password}@backend.example:9001/mcp?token={query}"
    backend: dict[str, Any] = {"name": "b"}
    data: dict[str, Any] = {"backends": [backend]}
    if where == "url":
        backend["url"] = bad_url
    elif where == "endpoints":
        backend["endpoints"] = ["http://127.0.0.1:9001/mcp", bad_url]
    elif where == "listener.address":
        backend["url"] = "http://127.0.0.1:9001/mcp"
        data["listener"] = {"address": bad_url, "port": bad_url}
    else:
        backend["url"] = "http://127.0.0.1:9001/mcp"
        data["surprise"] = bad_url
    text = str(outcome(lambda: parse_config_text(yaml.safe_dump(data))))
    for planted in (user, password, query):
        assert planted not in text


@settings(max_examples=60, deadline=None)
@given(width=st.integers(min_value=2, max_value=12), depth=st.integers(min_value=2, max_value=12))
def test_nested_aliases_are_refused_once_they_expand_past_the_bound(width: int, depth: int) -> None:
    lines = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    text = "\n".join(lines) + "\n"
    expanded = sum(width**i for i in range(1, depth + 1))
    started = time.monotonic()
    result = outcome(lambda: parse_config_text(text))
    assert time.monotonic() - started < 2.0
    assert isinstance(result, ConfigError)
    message = str(result)
    assert len(message) < 4 * ISSUE_TEXT_BOUND
    assert ("aliases are expanded" in message) == (expanded > MAX_YAML_NODES)


def test_a_recursive_alias_is_a_config_error() -> None:
    result = outcome(lambda: parse_config_text("backends: &a [*a]\n"))
    assert isinstance(result, ConfigError) and "recursive alias" in str(result)


def test_deep_nesting_is_a_config_error() -> None:
    result = outcome(lambda: parse_config_text("a: " + "[" * 1500 + "]" * 1500 + "\n"))
    assert isinstance(result, ConfigError)


@settings(max_examples=100, deadline=None)
@given(
    names=st.lists(st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True), min_size=0, max_size=4, unique=True),
    interval=st.integers(min_value=1, max_value=3600),
    port=st.integers(min_value=1, max_value=65535),
)
def test_a_valid_config_survives_a_dump_and_reload(names: list[str], interval: int, port: int) -> None:
    data = {
        "listener": {"port": port if port != 10001 else 10002},
        "health": {"interval": interval},
        "backends": [{"name": n, "url": f"http://127.0.0.1:{9000 + i}/mcp"} for i, n in enumerate(names)],
    }
    config = outcome(lambda: parse_config(data))
    if isinstance(config, ConfigError):  # a generated port may clash with a default one: named, not crashed
        assert "clashes" in str(config)
        return
    assert parse_config_text(dump_config(config)) == config
