"""Who asks and what they may see: the aggregator's authorization (docs/dev/auth.md).

`Access(config)` is off without an `auth` section: every request is
anonymous and granted everything (`policy.EVERYTHING`), and nothing is read
from the request. With `auth`, `Access.principal(scope)` reads the identity
Envoy verified (auth/identity.py: the payload header, which Envoy strips from
clients and sets only after verifying a token) and returns a `Principal`: the
principal and its grant. No verified identity (the request did not come
through Envoy's authenticated listener) is `None`: the endpoint answers 401.

The endpoint puts the principal on the ASGI scope (`PRINCIPAL_KEY`); the SDK's
handlers read it back from their request (`principal_of`). Lists are filtered by
the grant (`visible`: one filtered list per catalog, kind and grant, kept
while that catalog is current); a routed request for a name the grant does
not cover is refused as an unknown name (gateway.py).

`apply_config` swaps the rules (a config reload) and forgets every principal
read so far; grants of the old rules have other keys, so no page of theirs is
served again. A payload header seen before maps to its principal without being
decoded again (at most `MAX_PRINCIPALS` kept; the set is dropped when full).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter

from xds_control.aggregator.catalog import MergedCatalog, MergedList
from xds_control.auth.identity import PAYLOAD_HEADER, challenge, identity_of
from xds_control.auth.policy import EVERYTHING, Grant, Kind, Policy
from xds_control.config import Config
from xds_control.sanitize import preview
from xds_control.telemetry.logs import log_fast

log = logging.getLogger("xds_control.aggregator.access")
audit_log = logging.getLogger("xds_control.aggregator.audit")
PRINCIPAL_KEY = "xds_control.principal"
MAX_FILTERED_LISTS = 512
MAX_PRINCIPALS = 4096  # payload headers remembered with their principal (Envoy verified each; the rules decide once)
_PAYLOAD = PAYLOAD_HEADER.encode()
_NAME_KEY = {"tools": "name", "prompts": "name", "resources": "uri", "resource_templates": "uriTemplate"}

DENIED = Counter(
    "xds_control_aggregator_denied_total",
    "Routed requests refused by authorization (answered as an unknown name), by kind and the rules that matched.",
    ["kind", "rules"],
)
FOREIGN_SESSIONS = Counter(
    "xds_control_aggregator_foreign_session_requests_total",
    "Requests naming a legacy session another principal opened (answered 404, as an unknown session).",
)
UNVERIFIED = Counter(
    "xds_control_aggregator_unverified_requests_total",
    "Requests refused 401 because they carried no identity verified by Envoy (they did not come through it).",
)


@dataclass(frozen=True, slots=True)
class Principal:
    name: str  # escaped, truncated: safe to log
    grant: Grant
    owner: bytes = b""  # the exact identity (auth/identity.py `Identity.owner`); a legacy session is bound to it


ANONYMOUS = Principal("-", EVERYTHING)
# The principal of the request being served, for what is asked without a request at hand (the SDK's tool-schema
# lookup for `Mcp-Param-*` checks): a tool the principal may not use has no schema, as an unknown one has none.
CURRENT_PRINCIPAL: ContextVar[Principal] = ContextVar("xds_control_caller", default=ANONYMOUS)


class Access:
    def __init__(self, config: Config) -> None:
        self.apply_config(config)
        self._lists: dict[tuple[int, Kind, Any], tuple[MergedCatalog, MergedList]] = {}

    def apply_config(self, config: Config) -> None:
        self.enabled = config.auth is not None
        self.principal_claim = config.auth.principal_claim if config.auth is not None else "sub"
        self.policy = Policy(config.authorization)
        self._principals: dict[bytes, Principal] = {}  # payload header -> its principal (a client repeats its token)
        self.challenge = challenge(config).encode() if config.auth is not None else b""

    def principal(self, scope: Mapping[str, Any]) -> Principal | None:
        """The principal of an HTTP request (see the module docstring); `ANONYMOUS` when auth is off."""
        if not self.enabled:
            return ANONYMOUS
        header = None
        for name, value in scope.get("headers") or ():
            if name == _PAYLOAD:
                header = value
                break
        if header is not None and (known := self._principals.get(header)) is not None:
            return known
        identity = identity_of(header, self.principal_claim)
        if identity is None or header is None:
            UNVERIFIED.inc()
            return None
        principal = Principal(identity.principal, self.policy.grant(identity.claims), identity.owner)
        if len(self._principals) >= MAX_PRINCIPALS:
            self._principals.clear()
        self._principals[header] = principal
        return principal

    def visible(self, catalog: MergedCatalog, kind: Kind, grant: Grant) -> MergedList:
        """`catalog`'s list of `kind` as `grant` sees it (the list itself for a grant of everything)."""
        merged = catalog.lists[kind]
        if grant.everything:
            return merged
        key = (id(catalog), kind, grant.key)
        found = self._lists.get(key)
        if found is not None and found[0] is catalog:
            return found[1]
        if len(self._lists) >= MAX_FILTERED_LISTS or (
            self._lists and next(iter(self._lists.values()))[0] is not catalog
        ):
            self._lists.clear()  # a new catalog: the old one's filtered lists are never asked for again
        field = _NAME_KEY[kind]
        items = tuple(item for item in merged.items if grant.allows(kind, str(item.get(field, ""))))
        routes = {k: v for k, v in merged.routes.items() if grant.allows(kind, k)}
        # The same on every replica (a cursor issued by one is valid at another): a digest, never hash().
        audience = hashlib.sha256(repr(grant.key).encode()).hexdigest()[:12]
        filtered = MergedList(kind, items, routes, f"{merged.hash}.{audience}")
        self._lists[key] = (catalog, filtered)
        return filtered


def principal_of_scope(scope: Mapping[str, Any]) -> Principal:
    """The principal the endpoint put on an ASGI scope (`ANONYMOUS` when there is none: auth off)."""
    found = scope.get(PRINCIPAL_KEY)
    return found if isinstance(found, Principal) else ANONYMOUS


def principal_of(request: Any) -> Principal:
    """The principal of an SDK handler's request (see `principal_of_scope`)."""
    scope = getattr(request, "scope", None)
    return principal_of_scope(scope) if isinstance(scope, dict) else ANONYMOUS


def audit(principal: Principal, method: str, name: str, backend: str | None, outcome: str, seconds: float) -> None:
    """One line per routed request of an authenticated principal."""
    name = preview(name, 200)
    log_fast(
        audit_log,
        f"{method} {name} {backend or '-'} by {principal.name}: {outcome}",
        {
            "event": "audit",
            "principal": principal.name,
            "method": method,
            "exposed_name": name,
            "backend": backend or "",
            "outcome": outcome,
            "duration_ms": round(seconds * 1000, 3),
            "rules": principal.grant.rule_label,
        },
    )
