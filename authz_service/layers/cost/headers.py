"""The rate-limit headers clients already read (OpenAI's names) and the 429 body."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from authz_service.decision import Denial
from authz_service.layers.cost.scopes import Applied
from authz_service.layers.cost.store.base import LimitState

_HEADER_KIND = {"tokens": "tokens", "requests": "requests"}
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
        kind = _HEADER_KIND.get(entry.limit.kind)
        if kind is None:
            continue
        if kind not in tightest or state.remaining < tightest[kind][1].remaining:
            tightest[kind] = (entry, state)
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
    """429 naming the limit that was hit, when to retry, and every rate-limit header."""
    limit = entry.limit
    what = {"tokens": f"{requested} tokens", "requests": "1 request"}.get(
        limit.kind, "1 more request in flight"
    )
    details: dict[str, Any] = {
        "name": limit.name,
        "kind": limit.kind,
        "scope": entry.scope or "global",
        "window": limit.window_label,
        "limit": state.limit,
        "requested": requested if limit.kind == "tokens" else 1,
        "remaining": state.remaining,
        "reset_s": math.ceil(state.reset_ms / 1000),
    }
    return Denial(
        status=status,
        reason="cost.limit_exceeded",
        message=(
            f"limit {limit.name!r} ({limit.kind} per {limit.window_label}, "
            f"{entry.scope or 'global'}) has {state.remaining} of {state.limit} left: "
            f"{what} do not fit"
        ),
        headers={**headers, "retry-after": str(max(1, math.ceil(state.reset_ms / 1000)))},
        details=details,
    )
