"""``authz-service quota show|reset``: a principal's usage of every limit, read from (or
cleared in) the same store and keys the service uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from authz_service.layers.cost.headers import duration
from authz_service.layers.cost.scopes import GLOBAL_SCOPE, counter_key, partition_of, scope_of
from authz_service.layers.cost.settings import CostSection, LimitSpec
from authz_service.layers.cost.store.base import Charge, QuotaStore
from authz_service.layers.identity.principal import Principal

_OWN = frozenset({"user", "api_key"})


@dataclass(frozen=True, slots=True)
class Who:
    """The principal and request values an operator names on the command line."""

    user: str
    tenant: str = ""
    tier: str = ""
    api_key: str = ""
    model: str = ""
    route: str = ""
    ip: str = ""

    def principal(self) -> Principal:
        return Principal(
            subject=self.user,
            tenant=self.tenant,
            tier=self.tier,
            roles=frozenset(),
            scopes=frozenset(),
            method="api_key" if self.api_key else "jwt",
            provider="operator",
            credential_id=self.api_key,
        )


@dataclass(frozen=True, slots=True)
class Counter:
    limit: LimitSpec
    scope: str
    charge: Charge


class OperatorError(ValueError):
    """What the operator must add or fix on the command line."""


def counters(
    section: CostSection, who: Who, need_amounts: bool = True
) -> tuple[list[Counter], list[str]]:
    """The counters this principal uses, and the limits skipped for want of a value (or,
    with ``need_amounts``, of an amount for the principal's tier)."""
    if section.partition_by_tenant and not who.tenant:
        raise OperatorError("store.partition is tenant: name the principal's --tenant")
    partition = partition_of(who.tenant, section.partition_by_tenant)
    principal = who.principal()
    found, skipped = [], []
    for limit in section.limits.values():
        scope = scope_of(limit, principal, who.route, who.model, who.ip)
        amount = limit.amount_for(who.tier, scope) if scope is not None else None
        if not need_amounts and amount is None:
            amount = 0  # clearing a counter needs its key, not its amount
        if scope is None or amount is None or ("ip" in limit.per and not who.ip):
            skipped.append(limit.name)
            continue
        key = counter_key(partition, limit.name, scope)
        found.append(Counter(limit, scope, Charge(key, limit.kind, limit.window, amount, 0)))
    return found, skipped


async def show(store: QuotaStore, section: CostSection, who: Who) -> dict[str, Any]:
    found, skipped = counters(section, who)
    states = await store.usage([counter.charge for counter in found]) if found else ()
    return {
        "limits": [
            {
                "name": counter.limit.name,
                "kind": counter.limit.kind,
                "scope": counter.scope or GLOBAL_SCOPE,
                "window": counter.limit.window_label,
                "limit": state.limit,
                "used": state.used,
                "remaining": state.remaining,
                "reset": duration(state.reset_ms),
            }
            for counter, state in zip(found, states, strict=True)
        ],
        "skipped": skipped,
    }


async def reset(
    store: QuotaStore, section: CostSection, who: Who, only: str | None = None
) -> dict[str, Any]:
    """Clear the principal's own counters (scoped by user or API key); counters shared with
    others (tenant, model, global) only when named with ``only``."""
    if only is not None and only not in section.limits:
        raise OperatorError(f"no limit is named {only!r} (known: {', '.join(section.limits)})")
    found, skipped = counters(section, who, need_amounts=False)
    if only is None:
        chosen = [counter for counter in found if _OWN & set(counter.limit.per)]
    else:
        chosen = [counter for counter in found if counter.limit.name == only]
    cleared = await store.reset([counter.charge.key for counter in chosen]) if chosen else 0
    return {
        "reset": [counter.limit.name for counter in chosen],
        "counters_with_usage": cleared,
        "skipped": skipped,
    }
