"""The merged catalog: every routable backend's tools, resources, templates and prompts as one MCP server.

Pure: `merge_catalog(config, statuses)` is a function of the config and the
view, with no I/O and no clock, rebuilt once per view change; list requests
are then served from its precomputed, hashed lists.

Naming (tools and prompts; `aggregator.conflict_resolution`):

* ``prefix``   every name becomes ``prefix_format.format(backend=...) + name``;
* ``priority`` the earliest routable backend in config order keeps the bare
  name, later ones fall back to the prefixed name;
* ``manual``   names stay bare unless ``backends[i].tools.rename`` maps them;
  two backends still exposing one name is a conflict and *both* are left out
  (`conflicts`; at start-up it is a config error, see `manual_conflict_issues`).

Resources and templates are keyed by URI / URI template. A URI offered by one
routable backend is exposed unchanged in every mode (URIs are namespaced by
their scheme and appear inside content, so rewriting them would break links);
only a URI offered by several is resolved like a name: ``prefix`` prefixes
every copy, ``priority`` prefixes all but the first, ``manual`` leaves all out.

Whatever the mode, a name that still collides after naming (``a`` + ``b_x``
vs ``a_b`` + ``x``) is kept by the earlier backend and left out for the rest.
The tool filter (`backends[i].tools.include/exclude`) runs before naming, so a
filtered tool has no route at all and cannot be called by guessing its name.

Order is stable: backends in config order, each backend's items in its own
listing order. Each list carries a content hash, the change signal for
`list_changed` notifications and the guard on pagination cursors.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal

from mcp.shared.uri_template import InvalidUriTemplate, UriTemplate

from xds_control.config import BackendConfig, Config
from xds_control.errors import ConfigIssue
from xds_control.view import BackendStatus, BreakerState, Catalog, remaining

Kind = Literal["tools", "resources", "resource_templates", "prompts"]
KINDS: tuple[Kind, ...] = ("tools", "resources", "resource_templates", "prompts")
NAMED_KINDS: frozenset[Kind] = frozenset({"tools", "prompts"})
KEY_FIELD: Mapping[Kind, str] = MappingProxyType(
    {"tools": "name", "prompts": "name", "resources": "uri", "resource_templates": "uriTemplate"}
)
BACKEND_META_KEY = "xds-control/backend"  # `_meta` key on every exposed item: the backend that offers it


@dataclass(frozen=True)
class Route:
    """Where an exposed item lives: the backend and the item's own name (or URI) there."""

    backend: str
    original: str


@dataclass(frozen=True)
class Unavailable:
    """A configured backend that is not routable now, as reported to clients. `retry_at` is the view's deadline
    (unix time); `retry_after`, the seconds left until it, is computed each time it is read, so it counts down."""

    backend: str
    state: str
    retry_at: float | None = None
    required: bool = False

    @property
    def retry_after(self) -> float | None:
        return remaining(self.retry_at, time.time())

    def to_json(self) -> dict[str, Any]:
        return {"backend": self.backend, "state": self.state, "retry_after": self.retry_after}


@dataclass(frozen=True)
class Conflict:
    """One exposed name (or URI) claimed by several backends after naming, and who was left out."""

    kind: Kind
    name: str
    backends: tuple[str, ...]
    rejected: tuple[str, ...]


@dataclass(frozen=True)
class MergedList:
    kind: Kind
    items: tuple[Mapping[str, Any], ...] = ()
    routes: Mapping[str, Route] = field(default_factory=dict)
    hash: str = ""


@dataclass(frozen=True)
class _Template:
    template: UriTemplate
    route: Route
    prefix: str  # the literal the exposed template starts with that the backend's does not ("" when unprefixed)


@dataclass(frozen=True)
class MergedCatalog:
    """What the aggregator serves for one view: the lists, their routes, and who is missing."""

    lists: Mapping[Kind, MergedList]
    unavailable: tuple[Unavailable, ...] = ()
    conflicts: tuple[Conflict, ...] = ()
    configured: int = 0
    routable: int = 0
    # Exposed keys that would belong to a backend that is not routable now: only for naming it in errors.
    shadow: Mapping[Kind, Mapping[str, str]] = field(default_factory=dict)
    templates: tuple[_Template, ...] = ()
    shadow_templates: tuple[tuple[UriTemplate, str], ...] = ()
    prefixes: tuple[tuple[str, str], ...] = ()  # (prefix, backend), longest first

    @property
    def hashes(self) -> dict[Kind, str]:
        return {kind: self.lists[kind].hash for kind in KINDS}

    def route(self, kind: Kind, key: str) -> Route | None:
        """The route of an exposed tool/prompt name or resource URI (resources also match templates)."""
        found = self.lists[kind].routes.get(key)
        if found is not None or kind != "resources":
            return found
        for entry in self.templates:
            if not key.startswith(entry.prefix):
                continue
            original = key[len(entry.prefix) :]
            if _matches(entry.template, original):
                return Route(entry.route.backend, original)
        return None

    def unavailable_owner(self, kind: Kind, key: str) -> Unavailable | None:
        """The unroutable backend an unknown name or URI most likely belongs to, if any."""
        backend = self.shadow.get(kind, {}).get(key)
        if backend is None and kind == "resources":
            backend = next((b for template, b in self.shadow_templates if _matches(template, key)), None)
        if backend is None:
            backend = next((b for prefix, b in self.prefixes if key.startswith(prefix)), None)
        return next((u for u in self.unavailable if u.backend == backend), None)

    def item_counts(self) -> dict[Kind, int]:
        return {kind: len(self.lists[kind].items) for kind in KINDS}


def _matches(template: UriTemplate, uri: str) -> bool:
    try:
        return template.match(uri) is not None
    except ValueError:
        return False


def effective_state(status: BackendStatus | None) -> str:
    """The one-word reason a backend is (not) routable: its health state, unless drain or breaker overrides."""
    if status is None:
        return "unknown"
    if status.drained:
        return "drained"
    if status.breaker is BreakerState.OPEN:
        return "circuit_open"
    if status.breaker is BreakerState.HALF_OPEN:
        return "circuit_half_open"
    return status.state.value


def prefix_for(config: Config, backend: str) -> str:
    return config.aggregator.prefix_format.format(backend=backend)


def list_hash(items: Sequence[Mapping[str, Any]]) -> str:
    data = json.dumps(items, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class _Entry:
    backend: str
    key: str
    item: Mapping[str, Any]


_MEMO: dict[tuple[Any, ...], tuple[tuple[_Entry, ...], str]] = {}
_MEMO_LIMIT = 1024


def _backend_entries(kind: Kind, backend: BackendConfig, catalog: Catalog) -> tuple[tuple[_Entry, ...], str]:
    """One backend's items of one kind (filtered, malformed and repeated ones dropped) and their digest.

    Memoized on the catalog's content hash and the filter: a view change that
    touches one backend does not re-walk the others' catalogs.
    """
    memo_key = (backend.name, catalog.hash, kind, tuple(backend.tools.include), tuple(backend.tools.exclude))
    if catalog.hash and (found := _MEMO.get(memo_key)) is not None:
        return found
    field_name = KEY_FIELD[kind]
    unfiltered = kind != "tools" or (backend.tools.include == ["*"] and not backend.tools.exclude)
    out: list[_Entry] = []
    seen: set[str] = set()
    for item in getattr(catalog, kind):
        key = item.get(field_name) if isinstance(item, dict | Mapping) else None
        if not isinstance(key, str) or not key or key in seen:
            continue
        if not unfiltered and not backend.tools.allows(key):
            continue
        seen.add(key)
        out.append(_Entry(backend.name, key, item))
    entries = tuple(out)
    result = entries, list_hash([e.item for e in entries])
    if catalog.hash:
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.clear()
        _MEMO[memo_key] = result
    return result


def _entries(kind: Kind, backends: Sequence[tuple[BackendConfig, BackendStatus]]) -> tuple[list[_Entry], list[str]]:
    """Every backend's entries of one kind in config order, and each contributing backend's digest."""
    out: list[_Entry] = []
    digests: list[str] = []
    for backend, status in backends:
        if status.catalog is None:
            continue
        entries, digest = _backend_entries(kind, backend, status.catalog)
        out.extend(entries)
        digests.append(f"{backend.name}:{digest}")
    return out, digests


def _propose(config: Config, kind: Kind, entries: list[_Entry]) -> list[tuple[str, _Entry]]:
    """The exposed name each entry asks for under the configured strategy (collisions settled later)."""
    strategy = config.aggregator.conflict_resolution
    holders: dict[str, list[str]] = {}
    for entry in entries:
        holders.setdefault(entry.key, []).append(entry.backend)
    renames = {b.name: b.tools.rename for b in config.backends} if strategy == "manual" else {}
    proposals = []
    for entry in entries:
        first = holders[entry.key][0] == entry.backend
        contested = len(holders[entry.key]) > 1
        prefixed = prefix_for(config, entry.backend) + entry.key
        if kind in NAMED_KINDS:
            exposed = {
                "prefix": prefixed,
                "priority": entry.key if first else prefixed,
                "manual": renames.get(entry.backend, {}).get(entry.key, entry.key),
            }[strategy]
        elif not contested or strategy == "manual":
            exposed = entry.key
        else:
            exposed = entry.key if strategy == "priority" and first else prefixed
        proposals.append((exposed, entry))
    return proposals


def _settle(
    config: Config, kind: Kind, proposals: list[tuple[str, _Entry]]
) -> tuple[list[tuple[str, _Entry]], list[Conflict]]:
    """Keep one entry per exposed name: the first in config order, or none at all in manual mode."""
    groups: dict[str, list[int]] = {}
    for i, (exposed, _) in enumerate(proposals):
        groups.setdefault(exposed, []).append(i)
    manual = config.aggregator.conflict_resolution == "manual"
    rejected: set[int] = set()
    conflicts: list[Conflict] = []
    for exposed, indices in groups.items():
        if len(indices) == 1:
            continue
        backends = tuple(proposals[i][1].backend for i in indices)
        left_out = indices if manual else indices[1:]
        rejected.update(left_out)
        conflicts.append(Conflict(kind, exposed, backends, backends if manual else backends[1:]))
    kept = [pair for i, pair in enumerate(proposals) if i not in rejected] if rejected else proposals
    return kept, conflicts


def _expose(kind: Kind, exposed: str, entry: _Entry) -> dict[str, Any]:
    item = dict(entry.item)
    item[KEY_FIELD[kind]] = exposed
    meta = item.get("_meta")
    item["_meta"] = {**(meta if isinstance(meta, Mapping) else {}), BACKEND_META_KEY: entry.backend}
    return item


def _named(
    config: Config, kind: Kind, backends: Sequence[tuple[BackendConfig, BackendStatus]]
) -> tuple[list[tuple[str, _Entry]], list[Conflict], str]:
    """The kept (exposed name, entry) pairs, the conflicts, and the list's content hash."""
    entries, digests = _entries(kind, backends)
    kept, conflicts = _settle(config, kind, _propose(config, kind, entries))
    # The exposed items are the backends' items with a new name and a backend tag: the names, owners
    # and the backends' content digests determine them, so hash those instead of 4,000 dicts.
    content = list_hash([digests, [(exposed, e.backend, e.key) for exposed, e in kept]])
    return kept, conflicts, content


def _parse_template(text: str) -> UriTemplate | None:
    try:
        return UriTemplate.parse(text)
    except (InvalidUriTemplate, ValueError):
        return None


def merge_catalog(config: Config, statuses: Mapping[str, BackendStatus]) -> MergedCatalog:
    """Merge the catalogs of the routable configured backends. Backends missing from `statuses` are unknown."""
    configured = [(b, statuses.get(b.name)) for b in config.backends]
    live = [(b, s) for b, s in configured if s is not None and s.routable]
    lists: dict[Kind, MergedList] = {}
    conflicts: list[Conflict] = []
    templates: list[_Template] = []
    for kind in KINDS:
        kept, kind_conflicts, content = _named(config, kind, live)
        conflicts.extend(kind_conflicts)
        items = tuple(_expose(kind, exposed, entry) for exposed, entry in kept)
        routes = {exposed: Route(entry.backend, entry.key) for exposed, entry in kept}
        lists[kind] = MergedList(kind, items, MappingProxyType(routes), content)
        if kind == "resource_templates":
            for exposed, entry in kept:
                parsed = _parse_template(entry.key)
                if parsed is not None:
                    prefix = exposed[: len(exposed) - len(entry.key)] if exposed.endswith(entry.key) else ""
                    templates.append(_Template(parsed, Route(entry.backend, entry.key), prefix))

    unavailable = _unavailable(configured)
    down = {u.backend for u in unavailable}
    # The shadow: how names would resolve with every catalogued backend in, kept only for the unroutable ones.
    everyone = [(b, s) for b, s in configured if s is not None and s.catalog is not None]
    shadow: dict[Kind, dict[str, str]] = {}
    shadow_templates: list[tuple[UriTemplate, str]] = []
    if down:
        for kind in KINDS:
            kept, _, _ = _named(config, kind, everyone)
            shadow[kind] = {exposed: e.backend for exposed, e in kept if e.backend in down}
            if kind == "resource_templates":
                for _, entry in kept:
                    parsed = _parse_template(entry.key) if entry.backend in down else None
                    if parsed is not None:
                        shadow_templates.append((parsed, entry.backend))
    prefixes = sorted(((prefix_for(config, name), name) for name in down), key=lambda p: -len(p[0]))
    return MergedCatalog(
        lists=MappingProxyType(lists),
        unavailable=unavailable,
        conflicts=tuple(conflicts),
        configured=len(configured),
        routable=len(live),
        shadow=MappingProxyType(shadow),
        templates=tuple(templates),
        shadow_templates=tuple(shadow_templates),
        prefixes=tuple(prefixes),
    )


def _unavailable(configured: Sequence[tuple[BackendConfig, BackendStatus | None]]) -> tuple[Unavailable, ...]:
    return tuple(
        Unavailable(b.name, effective_state(s), s.retry_at if s else None, b.required)
        for b, s in configured
        if s is None or not s.routable
    )


MergeKey = tuple[tuple[str, bool, str | None], ...]


def merge_key(config: Config, statuses: Mapping[str, BackendStatus]) -> MergeKey | None:
    """What `merge_catalog` depends on besides the config: per configured backend, whether it is routable and
    its catalog's hash. Equal keys merge to equal lists, so a view change that keeps the key (a state change of
    an unroutable backend, a breaker or drain change that does not flip routability, a new `last_error`) needs
    only `with_states`. None when some catalog carries no hash (it cannot be compared)."""
    key = []
    for backend in config.backends:
        status = statuses.get(backend.name)
        catalog = status.catalog if status is not None else None
        if catalog is not None and not catalog.hash:
            return None
        key.append(
            (backend.name, status is not None and status.routable, catalog.hash if catalog is not None else None)
        )
    return tuple(key)


def with_states(merged: MergedCatalog, config: Config, statuses: Mapping[str, BackendStatus]) -> MergedCatalog:
    """`merged` with the unroutable backends' states and retry hints of `statuses` (same merge key)."""
    unavailable = _unavailable([(b, statuses.get(b.name)) for b in config.backends])
    return merged if unavailable == merged.unavailable else replace(merged, unavailable=unavailable)


def empty_catalog(config: Config) -> MergedCatalog:
    """The catalog before any view arrived: nothing routable, every configured backend unknown."""
    return merge_catalog(config, {})


def manual_conflict_issues(config: Config, conflicts: Iterable[Conflict]) -> list[ConfigIssue]:
    """Manual-mode tool/prompt conflicts as config issues, each pointing at the rename map that can settle it."""
    if config.aggregator.conflict_resolution != "manual":
        return []
    index = {b.name: i for i, b in enumerate(config.backends)}
    issues = []
    for conflict in conflicts:
        if conflict.kind not in NAMED_KINDS:
            continue
        what = "tool" if conflict.kind == "tools" else "prompt"
        others = ", ".join(repr(b) for b in conflict.backends)
        last = conflict.backends[-1]
        issues.append(
            ConfigIssue(
                f"backends.{index.get(last, '?')}.tools.rename",
                f"{what} name offered by backends {others}; map it to a unique name in one of their tools.rename",
                conflict.name,
            )
        )
    return issues
