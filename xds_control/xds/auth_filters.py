"""Envoy's side of incoming authentication (docs/dev/auth.md). Pure: dicts in Envoy's JSON shape.

With `auth` configured, the public listener gets, in this order:

* an early header mutation that removes the identity headers
  (auth/identity.py) a client may have sent, before any filter or route;
* `jwt_authn`: one provider per issuer (signature against the issuer's
  JWKS: inline from `jwks_file`, or fetched by Envoy from `jwks_url` through
  a cluster made here), `iss`, `aud` (the gateway's resource URI unless
  listed), `exp` required, `nbf`, the clock skew. Every path but the RFC 9728
  metadata requires a token of one of the issuers, read from the
  `Authorization` header only (never the query). The verified payload is
  forwarded to the aggregator as a header, the principal claim as another
  when something reads it (`principal_header_read`: the rate limiter, the
  refusal log); the token itself is not forwarded (`forward: false`);
* `rbac` when `required_scopes` is set: every scope must be a word of the
  token's `scope` claim, else 403;
* `local_ratelimit` (configured per MCP route, so the metadata is never
  limited) with one token bucket per principal when `rate_limit` is set.

The HCM's local reply mappers give Envoy's own 401/403 the headers RFC 9728
and RFC 6750 ask for: `WWW-Authenticate: Bearer resource_metadata="..."`,
with `error="invalid_token"` when a token was sent, and
`error="insufficient_scope", scope="..."` on 403. The metadata itself is a
direct response route.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import urlsplit

from xds_control.auth.identity import IDENTITY_HEADERS, PAYLOAD_HEADER, PRINCIPAL_HEADER, challenge
from xds_control.config import WELL_KNOWN_RESOURCE, Config, IncomingAuthConfig, IssuerConfig, RateLimitConfig

Spec = dict[str, Any]
JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RATE_LIMIT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
HEADER_MUTATION_TYPE = (
    "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
)
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
JWT_FILTER = "envoy.filters.http.jwt_authn"
RBAC_FILTER = "envoy.filters.http.rbac"
RATE_LIMIT_FILTER = "envoy.filters.http.local_ratelimit"
PAYLOAD_METADATA = "jwt_payload"
PRINCIPAL_DESCRIPTOR = "principal"
JWT_CACHE_SIZE = 1024  # verified tokens kept per provider (per Envoy worker)
JWT_CACHE_MAX_TOKEN = 8192  # larger tokens are verified every time, never kept
MIN_FILL_INTERVAL = 0.05  # Envoy's lower bound for a token bucket's fill_interval
EMPTY_JWKS = '{"keys":[]}'


def _seconds(value: float) -> str:
    millis = round(value * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis / 1000:.3f}s"


def provider_name(index: int) -> str:
    return f"issuer-{index}"


def jwks_cluster_name(index: int) -> str:
    return f"xds-control-jwks-{index}"


# -- the filters ------------------------------------------------------------------------------


def principal_header_read(config: Config) -> bool:
    """Does anything read `PRINCIPAL_HEADER`? The rate limiter (its key) and the refusal log line of a 403 from
    the scope check or a 429 (the principal of a refused but verified request). Envoy's other refusals come before
    a verification, so without either the header would only cost every call a claim lookup and a header."""
    return config.auth is not None and (config.rate_limit is not None or bool(config.auth.required_scopes))


def _provider(index: int, issuer: IssuerConfig, auth: IncomingAuthConfig, config: Config, keys: dict[str, str]) -> Spec:
    provider: Spec = {
        "issuer": issuer.issuer,
        "audiences": list(issuer.audiences) or [config.auth_resource()],
        "require_expiration": True,
        # The Authorization header only: Envoy's default also takes an `access_token` query parameter, which the
        # MCP authorization spec forbids (a token in a URL ends up in logs) and the metadata does not offer.
        "from_headers": [{"name": "authorization", "value_prefix": "Bearer "}],
        "forward": False,  # the token stops here: no passthrough to the aggregator or a backend
        "forward_payload_header": PAYLOAD_HEADER,
        "clock_skew_seconds": math.ceil(auth.clock_skew),
        # A token seen again skips the signature check (its expiry is still checked on every request).
        "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_SIZE, "jwt_max_token_size": JWT_CACHE_MAX_TOKEN},
    }
    if principal_header_read(config):
        provider["claim_to_headers"] = [{"header_name": PRINCIPAL_HEADER, "claim_name": auth.principal_claim}]
    if auth.required_scopes:
        provider["payload_in_metadata"] = PAYLOAD_METADATA  # what the scope check reads (`rbac_filter`)
    if issuer.jwks_file is not None:
        provider["local_jwks"] = {"inline_string": keys.get(issuer.jwks_file, EMPTY_JWKS)}
    else:
        provider["remote_jwks"] = {
            "http_uri": {
                "uri": issuer.jwks_url,
                "cluster": jwks_cluster_name(index),
                "timeout": _seconds(issuer.jwks_timeout),
            },
            "cache_duration": _seconds(issuer.jwks_cache_duration),
            "async_fetch": {"fast_listener": False},  # fetched when the listener starts, refreshed in the background
            "retry_policy": {"num_retries": 3},
        }
    return provider


def jwt_filter(config: Config, keys: dict[str, str]) -> Spec:
    auth = config.auth
    assert auth is not None
    providers = {provider_name(i): _provider(i, iss, auth, config, keys) for i, iss in enumerate(auth.issuers)}
    names = list(providers)
    requires: Spec = (
        {"provider_name": names[0]}
        if len(names) == 1
        else {"requires_any": {"requirements": [{"provider_name": n} for n in names]}}
    )
    return {
        "name": JWT_FILTER,
        "typed_config": {
            "@type": JWT_TYPE,
            "providers": providers,
            "rules": [
                {"match": {"prefix": WELL_KNOWN_RESOURCE}},  # the RFC 9728 metadata: no token needed
                {"match": {"prefix": "/"}, "requires": requires},
            ],
            "stat_prefix": "xds_control_auth",
        },
    }


def _scope_regex(scope: str) -> str:
    escaped = "".join("\\" + c if not c.isalnum() else c for c in scope)
    return f"(^|.* ){escaped}( .*|$)"


def rbac_filter(auth: IncomingAuthConfig) -> Spec:
    """403 unless the token's `scope` claim holds every required scope (the metadata paths pass)."""
    checks = [
        {
            "sourced_metadata": {
                "metadata_matcher": {
                    "filter": JWT_FILTER,
                    "path": [{"key": PAYLOAD_METADATA}, {"key": "scope"}],
                    "value": {"string_match": {"safe_regex": {"regex": _scope_regex(scope)}}},
                }
            }
        }
        for scope in auth.required_scopes
    ]
    return {
        "name": RBAC_FILTER,
        "typed_config": {
            "@type": RBAC_TYPE,
            "rules_stat_prefix": "xds_control_scopes_",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "metadata": {
                        "permissions": [{"url_path": {"path": {"prefix": WELL_KNOWN_RESOURCE}}}],
                        "principals": [{"any": True}],
                    },
                    "scopes": {
                        "permissions": [{"any": True}],
                        "principals": [checks[0] if len(checks) == 1 else {"and_ids": {"ids": checks}}],
                    },
                },
            },
        },
    }


def rate_limit_filter() -> Spec:
    """The filter with no bucket of its own: only routes with `route_rate_limit` are limited."""
    return {
        "name": RATE_LIMIT_FILTER,
        "typed_config": {"@type": RATE_LIMIT_TYPE, "stat_prefix": "xds_control_rate_limit"},
    }


def token_bucket(limit: RateLimitConfig) -> tuple[Spec, int]:
    """The bucket of `requests_per_second` and `burst`, and the Retry-After seconds of a refusal (the time
    one refill takes, at least 1)."""
    interval = max(MIN_FILL_INTERVAL, 1.0 / limit.requests_per_second)
    per_fill = max(1, round(limit.requests_per_second * interval))
    bucket = {"max_tokens": limit.burst, "tokens_per_fill": per_fill, "fill_interval": _seconds(interval)}
    return bucket, max(1, math.ceil(interval))


def route_rate_limit(limit: RateLimitConfig) -> Spec:
    """Per-route config: one bucket per principal (a dynamic descriptor, at most `max_principals` kept); a
    verified request without a principal claim shares the route's default bucket."""
    bucket, retry_after = token_bucket(limit)
    full = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "@type": RATE_LIMIT_TYPE,
        "stat_prefix": "xds_control_rate_limit",
        "token_bucket": bucket,
        "filter_enabled": {**full, "runtime_key": "xds_control.rate_limit.enabled"},
        "filter_enforced": {**full, "runtime_key": "xds_control.rate_limit.enforced"},
        "descriptors": [{"entries": [{"key": PRINCIPAL_DESCRIPTOR, "value": ""}], "token_bucket": bucket}],
        "max_dynamic_descriptors": limit.max_principals,
        "rate_limits": [
            {
                "actions": [
                    {"request_headers": {"header_name": PRINCIPAL_HEADER, "descriptor_key": PRINCIPAL_DESCRIPTOR}}
                ]
            }
        ],
        "always_consume_default_token_bucket": False,
        "response_headers_to_add": [
            {"header": {"key": "retry-after", "value": str(retry_after)}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }


def auth_http_filters(config: Config, keys: dict[str, str]) -> list[Spec]:
    """The public listener's filters before session affinity and the router."""
    if config.auth is None:
        return []
    filters = [jwt_filter(config, keys)]
    if config.auth.required_scopes:
        filters.append(rbac_filter(config.auth))
    if config.rate_limit is not None:
        filters.append(rate_limit_filter())
    return filters


def strip_identity_headers() -> list[Spec]:
    """HCM `early_header_mutation_extensions`: a client's copies of the identity headers go first."""
    return [
        {
            "name": "envoy.http.early_header_mutation.header_mutation",
            "typed_config": {"@type": HEADER_MUTATION_TYPE, "mutations": [{"remove": h} for h in IDENTITY_HEADERS]},
        }
    ]


def _status_is(status: int, runtime_key: str) -> Spec:
    """An access-log filter: the response status is `status`."""
    value = {"default_value": status, "runtime_key": runtime_key}
    return {"status_code_filter": {"comparison": {"op": "EQ", "value": value}}}


def _mapper(status: int, extra: list[Spec], value: str, *, new_status: int | None = None) -> Spec:
    code = _status_is(status, f"xds_control.auth.status_{status}")
    mapper: Spec = {
        "filter": {"and_filter": {"filters": [code, *extra]}} if extra else code,
        "headers_to_add": [
            {"header": {"key": "www-authenticate", "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        ],
    }
    if new_status is not None:
        mapper["status_code"] = new_status
    return mapper


def local_reply_config(config: Config) -> Spec:
    """Envoy's own 401 and 403 with the challenge the MCP authorization spec asks for."""
    auth = config.auth
    assert auth is not None
    token_sent = {"header_filter": {"header": {"name": "authorization", "present_match": True}}}
    # No verified payload (jwt_authn sets the header only after a verification; a client's copy is removed
    # first): a 403 is then jwt_authn's (an audience not allowed), not the scope check's.
    unverified = {"header_filter": {"header": {"name": PAYLOAD_HEADER, "present_match": True, "invert_match": True}}}
    invalid = challenge(config, error="invalid_token")
    mappers = [
        # jwt_authn answers some verification failures (an audience not allowed) with 403: RFC 6750 says 401
        _mapper(403, [unverified], invalid, new_status=401),
        _mapper(401, [token_sent], invalid),
        _mapper(401, [], challenge(config)),
    ]
    if auth.required_scopes:
        mappers.append(
            _mapper(403, [], challenge(config, error="insufficient_scope", scope=" ".join(auth.required_scopes)))
        )
    return {"mappers": mappers}


def refusal_access_log(listener: str) -> Spec:
    """One line on Envoy's stderr per request Envoy refused for authentication (401), scope (403) or rate
    (429), with Envoy's reason (`details=jwt_authn_access_denied{Jwt_is_expired}`, `local_rate_limited`,
    ...). No header but the verified principal, so never a token."""
    line = (
        f"[auth] %START_TIME% listener={listener} %REQ(:METHOD)% %PATH(NQ)% status=%RESPONSE_CODE% "
        f"details=%RESPONSE_CODE_DETAILS% principal=%REQ({PRINCIPAL_HEADER}):64% duration_ms=%DURATION%\n"
    )
    return {
        "name": "envoy.access_loggers.stderr",
        "filter": {
            "or_filter": {"filters": [_status_is(code, f"xds_control.auth.log_{code}") for code in (401, 403, 429)]}
        },
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
            "log_format": {"text_format_source": {"inline_string": line}},
        },
    }


# -- RFC 9728 metadata ------------------------------------------------------------------------


def resource_metadata(config: Config) -> Spec:
    auth = config.auth
    assert auth is not None
    document: Spec = {
        "resource": config.auth_resource(),
        "authorization_servers": list(auth.authorization_servers) or [i.issuer for i in auth.issuers],
        "bearer_methods_supported": ["header"],
    }
    if auth.scopes_supported:
        document["scopes_supported"] = list(auth.scopes_supported)
    return document


def metadata_paths(config: Config) -> list[str]:
    """`/.well-known/oauth-protected-resource` and the same followed by the resource's path (`/mcp`)."""
    path = urlsplit(config.auth_resource()).path.rstrip("/")
    paths = [WELL_KNOWN_RESOURCE, WELL_KNOWN_RESOURCE + "/mcp"]
    if path and WELL_KNOWN_RESOURCE + path not in paths:
        paths.append(WELL_KNOWN_RESOURCE + path)
    return paths


def metadata_routes(config: Config) -> list[Spec]:
    if config.auth is None:
        return []
    body = json.dumps(resource_metadata(config), separators=(",", ":"))
    return [
        {
            "name": f"oauth-protected-resource-{i}",
            "match": {"path": path},
            "direct_response": {"status": 200, "body": {"inline_string": body}},
            "response_headers_to_add": [
                {
                    "header": {"key": "content-type", "value": "application/json"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                },
                {
                    "header": {"key": "cache-control", "value": "max-age=300"},
                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                },
            ],
        }
        for i, path in enumerate(metadata_paths(config))
    ]


# -- clusters for jwks_url --------------------------------------------------------------------


def jwks_clusters(config: Config) -> dict[str, Spec]:
    """One cluster per issuer with a `jwks_url`: the URL's host, TLS for https (SNI, verified against
    `jwks_ca_file`)."""
    if config.auth is None:
        return {}
    clusters: dict[str, Spec] = {}
    for i, issuer in enumerate(config.auth.issuers):
        if issuer.jwks_url is None:
            continue
        url = urlsplit(issuer.jwks_url)
        host = url.hostname or ""
        port = url.port or (443 if url.scheme == "https" else 80)
        name = jwks_cluster_name(i)
        cluster: Spec = {
            "name": name,
            "type": "STRICT_DNS",
            "dns_lookup_family": "V4_PREFERRED",
            "connect_timeout": "2s",
            "load_assignment": {
                "cluster_name": name,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                        ]
                    }
                ],
            },
        }
        if url.scheme == "https":
            cluster["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": TLS_TYPE,
                    "sni": host,
                    "common_tls_context": {
                        "validation_context": {
                            "trusted_ca": {"filename": issuer.jwks_ca_file},
                            "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
                        }
                    },
                },
            }
        clusters[name] = cluster
    return clusters
