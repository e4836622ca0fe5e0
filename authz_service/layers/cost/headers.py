"""The rate-limit headers clients already read (OpenAI's names) and the 429 body."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from authz_service.decision import Denial
from authz_service.layers.cost.scopes import GLOBAL_SCOPE, Applied
from authz_service.layers.cost.store.base import LimitState

_HEADER_KINDS = frozenset({"tokens", "requests"})
"""In-flight limits have no standard header; they show in the 429 body only."""


def duration(ms: int) -> str:
    """OpenAI's reset format: ``1h2m3s``, ``45s``, ``250ms``."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = math.ceil(ms / 1000)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "")
    return f"{text}{seconds}s"


def ratelimit_headers(applied: Sequence[Applied], states: Sequence[LimitState]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{tokens,requests}`` of the tightest limit of
    each kind (the one with the least remaining)."""
    tightest: dict[str, tuple[Applied, LimitState]] = {}
    for entry, state in zip(applied, states, strict=True):
        counted = entry.limit.kind
        if counted not in _HEADER_KINDS:
            continue
        if counted not in tightest or state.remaining < tightest[counted][1].remaining:
            tightest[counted] = (entry, state)
    headers: dict[str, str] = {}
    for kind, (_, state) in tightest.items():
        headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{kind}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{kind}"] = duration(state.reset_ms)
    return headers


def exceeded_denial(
    status: int,
    entry: Applied,
    state: LimitState,
    requested: int,
    headers: Mapping[str, str],
) -> Denial:
    """429 naming the limit that was hit, when to retry, and every rate-limit header; a
    request larger than the whole limit gets its own code and no ``Retry-After``: waiting
    would not help."""
    limit = entry.limit
    scope = entry.scope or GLOBAL_SCOPE
    amount = requested if limit.kind == "tokens" else 1
    reset_s = max(1, math.ceil(state.reset_ms / 1000))
    details: dict[str, Any] = {
        "name": limit.name,
        "kind": limit.kind,
        "scope": scope,
        "window": limit.window_label,
        "limit": state.limit,
        "requested": amount,
        "remaining": state.remaining,
        "reset_s": reset_s,
    }
    what = {
        "tokens": f"{requested} tokens do not fit",
        "requests": "no request fits",
    }.get(limit.kind, "no more requests may be in flight")
    where = f"limit {limit.name!r} ({limit.kind} per {limit.window_label}, {scope})"
    if amount > state.limit:
        return Denial(
            status=status,
            reason="cost.request_exceeds_limit",
            message=f"{where} is {state.limit}: {requested} tokens never fit; ask for fewer "
            "output tokens or send a shorter prompt",
            headers=headers,
            details=details,
        )
    return Denial(
        status=status,
        reason="cost.limit_exceeded",
        message=f"{where} has {state.remaining} of {state.limit} left: {what}",
        headers={**headers, "retry-after": str(reset_s)},
        details=details,
    )
