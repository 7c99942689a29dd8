"""Who may use what: verified claims -> a `Grant` of exposed names. Pure.

`Policy(config.authorization)` compiles the rules once. `policy.grant(claims)`
returns the union of the grants of every rule whose `match` the claims meet
(or, when none does, everything for `default: allow` and nothing for
`default: deny`). With no `authorization` section every principal is granted
everything (`EVERYTHING`).

Invariants:

* A grant's `key` is stable and hashable: equal keys mean equal grants under
  the same rules (it holds a digest of the rules and the matched rule names),
  so list pages are memoised per key (list_pages.py's `audience`) and a reload
  that changes the rules changes every key.
* Globs know `*` (any run of characters) and `?` (one character); everything
  else is literal. They are compiled to one RE2 expression per kind and rule
  set: matching is linear in the name, whatever the patterns.
* Claims are peer data even once verified: a claim's values are read up to
  `MAX_CLAIM_VALUES` items, each up to `MAX_VALUE_CHARS` characters; a name is
  matched only up to `MAX_NAME_CHARS` (longer: not granted).
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import re2

from xds_control.config import AuthorizationConfig, AuthorizationRule, ClaimMatch

Kind = Literal["tools", "resources", "resource_templates", "prompts"]
MAX_CLAIM_VALUES = 1024
MAX_VALUE_CHARS = 1024
MAX_NAME_CHARS = 4096
MAX_CACHED_GRANTS = 1024
MAX_REMEMBERED_NAMES = 4096  # per pattern set: a name's answer, so a name asked again costs one dict lookup
_SPACE_SEPARATED = frozenset({"scope", "scp"})  # OAuth scope claims: one string of space-separated scopes


def _glob_regex(pattern: str) -> str:
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re2.escape(char))
    return "".join(out)


class Patterns:
    """A set of globs as one anchored RE2 expression (None: matches nothing; `everything`: matches all)."""

    __slots__ = ("_answers", "_regex", "everything", "globs")

    def __init__(self, globs: Iterable[str]) -> None:
        self.globs = tuple(sorted(set(globs)))
        self.everything = "*" in self.globs
        options = re2.Options()
        options.dot_nl = True
        self._regex = (
            re2.compile("(?:" + "|".join(_glob_regex(g) for g in self.globs) + ")", options)
            if self.globs and not self.everything
            else None
        )
        self._answers: dict[str, bool] = {}

    def match(self, name: str) -> bool:
        if self.everything:
            return True
        if self._regex is None or len(name) > MAX_NAME_CHARS:
            return False
        found = self._answers.get(name)
        if found is None:
            if len(self._answers) >= MAX_REMEMBERED_NAMES:
                self._answers.clear()  # names are the clients' to choose: the memo stays bounded
            found = self._answers[name] = self._regex.fullmatch(name) is not None
        return found


@dataclass(frozen=True, eq=False)
class Grant:
    """What one principal may use. `key`: see the module docstring; `rules`: the rules that matched."""

    key: Hashable
    rules: tuple[str, ...]
    tools: Patterns
    resources: Patterns
    prompts: Patterns
    everything: bool = False

    def allows(self, kind: Kind, name: str) -> bool:
        if self.everything:
            return True
        if kind == "tools":
            return self.tools.match(name)
        if kind == "prompts":
            return self.prompts.match(name)
        return self.resources.match(name)  # a resource's URI or a template's uriTemplate

    @functools.cached_property
    def rule_label(self) -> str:
        """The matched rules for the denials metric and audit lines ("default" when none matched)."""
        return ",".join(self.rules) if self.rules else "default"


EVERYTHING = Grant(
    key=None, rules=(), tools=Patterns(["*"]), resources=Patterns(["*"]), prompts=Patterns(["*"]), everything=True
)  # key None: list_pages.EVERYONE, the open gateway's pages


def claim_values(claims: Mapping[str, Any], claim: str) -> list[str]:
    """The values of `claim` as strings: a list's items, a scope claim's space-separated words, or the value."""
    value = claims.get(claim)
    if value is None:
        return []
    if isinstance(value, str):
        value = value[: MAX_VALUE_CHARS * 8].split(" ") if claim in _SPACE_SEPARATED else [value]
    elif not isinstance(value, list):
        value = [value]
    out = []
    for item in value[:MAX_CLAIM_VALUES]:
        if isinstance(item, bool):
            item = "true" if item else "false"
        if isinstance(item, str | int | float):
            text = str(item)
            if text and len(text) <= MAX_VALUE_CHARS:
                out.append(text)
    return out


def matches(match: ClaimMatch, claims: Mapping[str, Any]) -> bool:
    wanted = set(match.any_of)
    return any(v in wanted for v in claim_values(claims, match.claim))


@dataclass
class Policy:
    """The compiled rules of one `authorization` section (None: everyone is granted everything)."""

    config: AuthorizationConfig | None
    digest: str = field(init=False)
    _grants: dict[tuple[int, ...], Grant] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        dumped = self.config.model_dump(mode="json") if self.config is not None else None
        self.digest = hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def rules(self) -> Sequence[AuthorizationRule]:
        return self.config.rules if self.config is not None else ()

    def grant(self, claims: Mapping[str, Any]) -> Grant:
        if self.config is None:
            return EVERYTHING
        matched = tuple(i for i, rule in enumerate(self.config.rules) if matches(rule.match, claims))
        found = self._grants.get(matched)
        if found is None:
            if len(self._grants) >= MAX_CACHED_GRANTS:
                self._grants.clear()
            found = self._grants[matched] = self._build(matched)
        return found

    def _build(self, matched: tuple[int, ...]) -> Grant:
        assert self.config is not None
        rules = [self.config.rules[i] for i in matched]
        names = tuple(r.name for r in rules)
        key = ("grant", self.digest, matched)
        if not rules and self.config.default == "allow":
            return Grant(key=key, rules=(), tools=Patterns(["*"]), resources=Patterns(["*"]),
                         prompts=Patterns(["*"]), everything=True)  # fmt: skip
        return Grant(
            key=key,
            rules=names,
            tools=Patterns(g for r in rules for g in r.tools),
            resources=Patterns(g for r in rules for g in r.resources),
            prompts=Patterns(g for r in rules for g in r.prompts),
        )
