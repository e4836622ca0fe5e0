"""Layer 5: choose the provider that serves this request — among those the principal's
tier may use and that serve the requested model, by the route's strategy, the provider's
observed health, and the budget the cost layer says is left — and tell Envoy by a header."""

from __future__ import annotations

import math
import random
from typing import Any

import structlog

from authz_service.decision import Denial
from authz_service.feedback import FeedbackHub
from authz_service.layers.base import Context, LayerName
from authz_service.layers.routing.health import HealthBoard, ProviderHealth
from authz_service.layers.routing.settings import RoutingRoute, RoutingSection
from authz_service.layers.routing.strategies import choose
from authz_service.layers.routing.switches import SwitchCounter

PROVIDER_RESPONSE_HEADER = "x-authz-provider"
REASON_RESPONSE_HEADER = "x-authz-provider-reason"
COST_HEADER = "x-authz-reserved-cost"

_log = structlog.get_logger("authz_service.routing")


class RoutingLayer:
    name: LayerName = "routing"

    def __init__(self, section: RoutingSection, feedback: FeedbackHub) -> None:
        self._section = section
        self._feedback = feedback
        self.board = HealthBoard(section.providers, section.health, _log_unhealthy)
        self._switches = SwitchCounter(section.max_model_switches_per_minute)
        self._rng = random.Random()  # noqa: S311 - load spreading, not security

    async def start(self) -> None:
        self._feedback.attach(self.board)

    async def stop(self) -> None:
        self._feedback.detach(self.board)

    @property
    def ready(self) -> bool:
        return True

    async def check(self, ctx: Context) -> Denial | None:
        route: RoutingRoute = ctx.route.routing if ctx.route is not None else RoutingRoute()
        if not route.active:
            return None
        section = self._section
        body: Any = ctx.json_body
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(model, str) or not model:
            return Denial(400, "routing.no_model", "the request names no model to route by")
        principal = ctx.principal
        tier = principal.tier if principal is not None else ""
        candidates = [
            (provider, served)
            for provider in section.providers
            if (served := provider.serves(model, tier)) is not None
        ]
        if not candidates:
            return Denial(
                403,
                "routing.no_provider",
                f"no provider serves model {model!r} to the {tier or 'anonymous'} tier",
            )
        strategy = route.strategy or section.strategy
        low_budget = ctx.budget_left is not None and ctx.budget_left < section.low_budget_fraction
        tokens = ctx.token_estimate
        choice = choose(
            candidates,
            "cheapest" if low_budget else strategy,
            self.board,
            tokens.prompt if tokens is not None else 0,
            tokens.output if tokens is not None else 0,
            self._rng,
        )
        reason = f"budget_low:{choice.reason}" if low_budget else choice.reason
        who = principal.subject if principal is not None else ctx.view.source.ip
        wait_s = self._switches.allow(who, model, choice.provider.name)
        if wait_s is not None:
            return Denial(
                429,
                "routing.too_many_model_switches",
                f"more than {section.max_model_switches_per_minute} switches of model and "
                "provider in a minute",
                headers={"retry-after": str(max(1, math.ceil(wait_s)))},
            )
        ctx.upstream_headers[section.header] = choice.provider.route_value
        if section.model_header is not None:
            ctx.upstream_headers[section.model_header] = choice.served.name
        ctx.upstream_headers[COST_HEADER] = f"{choice.price:.6f}"
        ctx.response_headers[PROVIDER_RESPONSE_HEADER] = choice.provider.name
        ctx.response_headers[REASON_RESPONSE_HEADER] = reason
        ctx.metadata.update(
            provider=choice.provider.name,
            provider_reason=reason,
            served_model=choice.served.name,
            reserved_cost=f"{choice.price:.6f}",
        )
        return None


def _log_unhealthy(provider: str, reason: str, health: ProviderHealth) -> None:
    _log.warning(
        "provider_unhealthy",
        provider=provider,
        reason=reason,
        error_rate=round(health.error_rate, 3),
        latency_ms=round(health.latency_ms, 1) if health.latency_ms is not None else None,
        samples=health.samples,
    )
