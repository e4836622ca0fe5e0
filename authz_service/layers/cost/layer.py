"""Layer 4: estimate the request's tokens and reserve them, with its request counts, in
every applicable limit at once — before the request reaches the model, so concurrent
requests and several replicas can never overspend a budget."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from authz_service.decision import Denial
from authz_service.feedback import FeedbackHub
from authz_service.layers.base import Context, LayerName
from authz_service.layers.cost.backend import QuotaBackend
from authz_service.layers.cost.breaker import CircuitBreaker
from authz_service.layers.cost.estimator import TokenEstimator
from authz_service.layers.cost.headers import exceeded_denial, ratelimit_headers
from authz_service.layers.cost.scopes import Applied, applied_limits, partition_of
from authz_service.layers.cost.settings import CostRoute, CostSection
from authz_service.layers.cost.store.base import (
    Charge,
    LimitState,
    Outcome,
    QuotaStore,
    StoreError,
)

RESERVATION_HEADER = "x-authz-reservation"
TOKENS_HEADER = "x-authz-reserved-tokens"
_PROBE_INTERVAL_S = 1.0
_WARM_UP_TIMEOUT_S = 2.0
_RELEASE_TIMEOUT_S = 2.0

_log = structlog.get_logger("authz_service.cost")


class CostLayer:
    name: LayerName = "cost"

    def __init__(
        self,
        section: CostSection,
        backend: QuotaBackend,
        estimate: TokenEstimator,
        feedback: FeedbackHub | None = None,
    ) -> None:
        self._section = section
        self._feedback = feedback
        self._releasing: set[asyncio.Task[None]] = set()
        # Leases end when Envoy reports the request finished (its access-log stream).
        self._holds_leases = any(limit.kind == "in_flight" for limit in section.limits.values())
        self._store: QuotaStore = backend.store
        self._store_name = backend.name
        settings = section.store
        self._timeout_s = settings.timeout_ms / 1000
        self._breaker = CircuitBreaker(settings.breaker_failures, settings.breaker_open_s)
        self._fallback = backend.fallback
        self._prober: asyncio.Task[None] | None = None
        self._estimate = estimate  # shared with the semantic layer: one count per request

    # ---- lifecycle: a background probe notices a store that came back -------------------

    async def start(self) -> None:
        """Connect before taking traffic (a cluster client learns the slot map here), so the
        first decisions do not spend their deadline on it."""
        try:
            async with asyncio.timeout(_WARM_UP_TIMEOUT_S):
                await self._store.ping()
        except (StoreError, TimeoutError) as exc:
            self._breaker.failed()
            _log.warning("quota_store_unreachable_at_start", store=self._store_name, error=str(exc))
        self._prober = asyncio.create_task(self._probe_while_open())
        if self._feedback is not None and self._holds_leases:
            self._feedback.attach_finished(self.release_lease)

    async def stop(self) -> None:
        if self._feedback is not None:
            self._feedback.detach_finished(self.release_lease)
        if self._releasing:
            await asyncio.wait(self._releasing, timeout=_RELEASE_TIMEOUT_S)
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober

    @property
    def ready(self) -> bool:
        """Not ready while the store is down and the policy fails closed."""
        return self._breaker.state == "closed" or self._section.store.on_failure != "deny"

    async def _probe_while_open(self) -> None:
        while True:
            await asyncio.sleep(_PROBE_INTERVAL_S)
            if self._breaker.state == "closed":
                continue
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._store.ping()
            except (StoreError, TimeoutError):
                continue
            self._breaker.succeeded()
            _log.info("quota_store_recovered", store=self._store_name)

    def release_lease(self, reservation_id: str, reserved_tokens: int) -> None:
        """Envoy finished this request: end its in-flight leases. Its tokens stay charged
        in full (settled at what was reserved) until actual usage is reported."""
        task = asyncio.get_running_loop().create_task(self._settle(reservation_id, reserved_tokens))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _settle(self, reservation_id: str, tokens: int) -> None:
        if await self._fallback.settle(reservation_id, tokens):
            return  # admitted while the store was down
        if self._breaker.state != "closed":
            return  # the store is down: its lease ends with its lease_s
        try:
            async with asyncio.timeout(_RELEASE_TIMEOUT_S):
                await self._store.settle(reservation_id, tokens)
        except (StoreError, TimeoutError) as exc:
            _log.warning("lease_release_failed", store=self._store_name, error=str(exc))

    # ---- the check ----------------------------------------------------------------------

    async def check(self, ctx: Context) -> Denial | None:
        route: CostRoute = ctx.route.cost if ctx.route is not None else CostRoute()
        if not route.active:
            return None
        estimate = self._estimate(ctx, route.api) if route.api is not None else None
        model, tokens = (estimate.model, estimate.total) if estimate is not None else ("", 0)
        tenant = ctx.principal.tenant if ctx.principal is not None else ""
        partition = partition_of(tenant, self._section.partition_by_tenant)
        applied = applied_limits(route.limits, ctx, model, tokens, partition)
        if not applied:
            return None
        outcome = await self._reserve_in_store(partition, [entry.charge for entry in applied])
        mode = self._store_name
        if outcome is None:
            if self._section.store.on_failure == "deny":
                ctx.metadata["quota_store"] = "unavailable"
                return Denial(
                    status=503,
                    reason="cost.store_unavailable",
                    message="the quota store is unavailable; try again shortly",
                    headers={"retry-after": "1"},
                )
            # Each replica admits its share of every limit on its own until the store is back.
            scale = self._section.store.fallback_scale
            applied = applied_limits(route.limits, ctx, model, tokens, partition, scale)
            outcome = await self._fallback.reserve(partition, [entry.charge for entry in applied])
            mode = "fallback"
        ctx.metadata["quota_store"] = mode
        if outcome.admitted and outcome.reservation_id is not None:
            store = self._fallback if mode == "fallback" else self._store
            admitted_id = outcome.reservation_id
            ctx.undo.append(lambda: store.settle(admitted_id, 0))
        headers = ratelimit_headers(applied, outcome.states)
        if not outcome.admitted:
            index = outcome.exceeded if outcome.exceeded is not None else 0
            return exceeded_denial(
                route.status, applied[index], outcome.states[index], tokens, headers
            )
        ctx.budget_left = budget_left(applied, outcome.states)
        reservation = outcome.reservation_id or ""
        ctx.upstream_headers[RESERVATION_HEADER] = reservation
        ctx.upstream_headers[TOKENS_HEADER] = str(tokens)
        ctx.response_headers.update(headers)
        ctx.metadata.update(
            reservation_id=reservation,
            prompt_tokens=str(estimate.prompt if estimate is not None else 0),
            reserved_tokens=str(tokens),
        )
        return None

    async def _reserve_in_store(self, partition: str, charges: list[Charge]) -> Outcome | None:
        """The store's answer, or ``None`` when it failed, timed out or the breaker is open."""
        if not self._breaker.allow():
            return None
        try:
            async with asyncio.timeout(self._timeout_s):
                outcome = await self._store.reserve(partition, charges)
        except asyncio.CancelledError:  # the decision's deadline passed first: a failure too
            self._breaker.failed()
            raise
        except (StoreError, TimeoutError) as exc:
            self._breaker.failed()
            _log.warning(
                "quota_store_down" if self._breaker.state == "open" else "quota_store_error",
                store=self._store_name,
                error=str(exc) or type(exc).__name__,
                on_failure=self._section.store.on_failure,
                breaker=self._breaker.state,
            )
            return None
        self._breaker.succeeded()
        return outcome


def budget_left(applied: list[Applied], states: tuple[LimitState, ...]) -> float | None:
    """The smallest share left of any token budget this request was charged to."""
    shares = [
        state.remaining / state.limit
        for entry, state in zip(applied, states, strict=True)
        if entry.limit.kind == "tokens" and state.limit > 0
    ]
    return min(shares, default=None)
