"""Which counters one request charges: each applicable limit's scope value and key.

A scope is the limit's dimensions with this request's values (``tenant=acme,user=bob``);
it names the counter (``authz:{partition}:<limit>:<scope>``), the policy's overrides and
the denial. All counters of one request share a partition, so Redis Cluster can check
them in one script: the tenant's when every limit is scoped by principal, else one
partition for everything."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.layers.base import Context
from authz_service.layers.cost.settings import Dimension, LimitSpec, scope_text
from authz_service.layers.cost.store.base import KEY_PREFIX, Charge, hash_tag
from authz_service.layers.identity.principal import Principal

GLOBAL_PARTITION = "global"
GLOBAL_SCOPE = "global"
"""The scope of a limit with no ``per``: in its key, its denials and ``quota show``."""
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Applied:
    """One limit as it applies to one request."""

    limit: LimitSpec
    scope: str
    charge: Charge


def partition_of(tenant: str, by_tenant: bool) -> str:
    """A Redis-key-safe partition name (``[0-9a-z-]``) that does not reveal the tenant."""
    if not by_tenant:
        return GLOBAL_PARTITION
    return "t-" + hashlib.blake2b(tenant.encode(), digest_size=8).hexdigest()


def scope_of(
    limit: LimitSpec, principal: Principal | None, route: str, model: str, ip: str
) -> str | None:
    """``dim=value,...`` for this request, or ``None`` when the limit does not apply
    (an ``api_key`` limit for a token-bearing principal, a ``model`` limit without one)."""
    parts: list[tuple[str, str]] = []
    for dimension in limit.per:
        value = _value(dimension, principal, route, model, ip)
        if value is None:
            return None
        parts.append((dimension, value))
    return scope_text(parts)


def _value(
    dimension: Dimension, principal: Principal | None, route: str, model: str, ip: str
) -> str | None:
    if dimension == "user":
        return principal.subject if principal is not None else ANONYMOUS
    if dimension == "tenant":
        return principal.tenant if principal is not None else ""
    if dimension == "api_key":
        is_key = principal is not None and principal.method == "api_key"
        return principal.credential_id if is_key and principal is not None else None
    if dimension == "model":
        return model or None
    if dimension == "route":
        return route
    return ip


def applied_limits(
    limits: Sequence[LimitSpec],
    ctx: Context,
    model: str,
    tokens: int,
    partition: str,
    scale: float = 1.0,
) -> list[Applied]:
    """The charges of this request (``tokens`` for token limits, 1 for the others), each
    limit's amount taken from its overrides or the principal's tier, times ``scale``."""
    principal = ctx.principal
    tier = principal.tier if principal is not None else ""
    route = ctx.route.name if ctx.route is not None else ""
    applied = []
    for limit in limits:
        scope = scope_of(limit, principal, route, model, ctx.view.source.ip)
        if scope is None:
            continue
        amount = limit.amount_for(tier, scope)
        if amount is None:
            continue
        charge = Charge(
            key=counter_key(partition, limit.name, scope),
            kind=limit.kind,
            window=limit.window,
            limit=amount if scale == 1.0 else scaled(amount, scale),
            amount=tokens if limit.kind == "tokens" else 1,
        )
        applied.append(Applied(limit, scope, charge))
    return applied


def scaled(amount: int, scale: float) -> int:
    """A share of a limit, never rounded down to nothing: a limit that admits anything
    admits at least one request or token on its own."""
    return max(1, math.ceil(amount * scale)) if amount > 0 else 0


def counter_key(partition: str, limit: str, scope: str) -> str:
    return f"{KEY_PREFIX}:{hash_tag(partition)}:{limit}:{scope or GLOBAL_SCOPE}"
