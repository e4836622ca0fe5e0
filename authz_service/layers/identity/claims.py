"""Claims → Principal, as the policy maps them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class ClaimRule:
    """Where one principal field comes from: a claim name (URLs allowed, dots are paths)."""

    claim: str
    default: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimMapping:
    subject: ClaimRule = field(default_factory=lambda: ClaimRule("sub"))
    tenant: ClaimRule = field(default_factory=lambda: ClaimRule("tenant", "default"))
    tier: ClaimRule = field(default_factory=lambda: ClaimRule("tier", "free"))
    roles: ClaimRule = field(default_factory=lambda: ClaimRule("roles"))
    scopes: ClaimRule = field(default_factory=lambda: ClaimRule("scope"))


def claim_value(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by exact name first (``https://example.com/tier``), else by dotted path."""
    if name in claims:
        return claims[name]
    node: Any = claims
    for part in name.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def claim_text(claims: Mapping[str, Any], rule: ClaimRule) -> str | None:
    value = claim_value(claims, rule.claim)
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return rule.default


def claim_set(claims: Mapping[str, Any], rule: ClaimRule) -> frozenset[str]:
    """A list claim, or a space-separated string claim (OAuth's ``scope``)."""
    value = claim_value(claims, rule.claim)
    if value is None and rule.default is not None:
        value = rule.default
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str))
    return frozenset()
