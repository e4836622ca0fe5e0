"""How one provider is chosen among those that may serve a request."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from authz_service.layers.routing.health import HealthBoard
from authz_service.layers.routing.settings import Provider, ServedModel, Strategy


@dataclass(frozen=True, slots=True)
class Choice:
    provider: Provider
    served: ServedModel
    reason: str
    """Why this provider: the strategy's word for it, e.g. ``cheapest_within_target``."""
    price: float
    """The reservation priced with this provider (currency of the policy's prices)."""


Candidate = tuple[Provider, ServedModel]


def choose(
    candidates: Sequence[Candidate],
    strategy: Strategy,
    board: HealthBoard,
    prompt_tokens: int,
    output_tokens: int,
    rng: random.Random,
) -> Choice:
    """``candidates`` is not empty. Unhealthy providers are skipped unless all are."""
    healthy = [candidate for candidate in candidates if board.available(candidate[0])]
    pool, prefix = (healthy, "") if healthy else (list(candidates), "all_unhealthy:")

    def price(candidate: Candidate) -> float:
        return candidate[0].price(prompt_tokens, output_tokens)

    def latency(candidate: Candidate) -> float:
        observed = board.latency_ms(candidate[0])
        return candidate[0].latency_target_ms if observed is None else observed

    if len(pool) == 1:
        picked, reason = pool[0], "only_choice"
    elif strategy == "cheapest":
        picked, reason = min(pool, key=lambda c: (price(c), -c[0].weight)), "cheapest"
    elif strategy == "fastest":
        picked, reason = min(pool, key=latency), "fastest"
    elif strategy == "weighted":
        picked = rng.choices(pool, weights=[c[0].weight for c in pool])[0]
        reason = "weighted"
    else:
        within = [c for c in pool if latency(c) <= c[0].latency_target_ms]
        if within:
            picked = min(within, key=lambda c: (price(c), -c[0].weight))
            reason = "cheapest_within_target"
        else:
            picked, reason = min(pool, key=latency), "fastest_none_within_target"
    return Choice(picked[0], picked[1], prefix + reason, price(picked))
