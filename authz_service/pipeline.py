"""The one place that knows the order of the layers, and turns their verdicts into a Decision.

Fail closed by construction: whatever happens inside a layer (an exception, the deadline
running out) ends as an in-band 503 denial with a decision id, never as an error that
would leave the outcome to Envoy's ``failure_mode_allow``.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from authz_service.decision import Decision, Denial
from authz_service.feedback import FeedbackHub
from authz_service.layers.base import Context, Layer, LayerName, Lifecycle
from authz_service.layers.cost import CostLayer
from authz_service.layers.cost.backend import QuotaBackend
from authz_service.layers.cost.estimator import TokenEstimator
from authz_service.layers.identity import IdentityLayer
from authz_service.layers.protocol import ProtocolLayer
from authz_service.layers.routing import RoutingLayer
from authz_service.layers.semantics import SemanticsLayer
from authz_service.layers.syntax import SyntaxLayer
from authz_service.policy import Policy
from authz_service.policy.loader import route_table
from authz_service.request_view import RequestView

DECISION_ID_HEADER = "x-authz-decision-id"
UNDO_TIMEOUT_S = 2.0

_log = structlog.get_logger("authz_service.pipeline")


class DecisionObserver(Protocol):
    """Told of every decision: the decision log and the metrics."""

    def observe(self, view: RequestView, decision: Decision, latency_ns: int) -> None: ...


def build_layers(
    policy: Policy, quota: QuotaBackend | None = None, feedback: FeedbackHub | None = None
) -> list[Layer]:
    """The layers in DESIGN.md order. A layer no route uses is left out, so it costs
    nothing. ``quota``: the process's quota store (default: a new embedded one);
    ``feedback``: where Envoy's access-log stream reports (default: nowhere)."""
    layers: list[Layer] = [ProtocolLayer(policy.unmatched)]
    # one estimator: a Rego policy and the cost layer see the same count, made once
    estimator = TokenEstimator(policy.cost)
    if policy.identity is not None:
        layers.append(IdentityLayer(policy.identity))
    if any(route.syntax.active for route in policy.routes):
        layers.append(SyntaxLayer())
    if any(route.semantics.active for route in policy.routes):
        layers.append(SemanticsLayer(estimator))
    if policy.cost is not None and any(route.cost.active for route in policy.routes):
        backend = quota if quota is not None else QuotaBackend()
        layers.append(CostLayer(policy.cost, backend, estimator, feedback))
    if policy.routing is not None and any(route.routing.active for route in policy.routes):
        hub = feedback if feedback is not None else FeedbackHub()
        layers.append(RoutingLayer(policy.routing, hub))
    return layers


def new_decision_id() -> str:
    return secrets.token_hex(10)


class Pipeline:
    def __init__(
        self,
        policy: Policy,
        observers: Sequence[DecisionObserver] = (),
        layers: Sequence[Layer] | None = None,
        quota: QuotaBackend | None = None,
        feedback: FeedbackHub | None = None,
    ) -> None:
        self.policy = policy
        self._routes = route_table(policy)
        self._layers = tuple(build_layers(policy, quota, feedback) if layers is None else layers)
        self._deadline_s = policy.settings.decision_timeout_ms / 1000
        self._observers = tuple(observers)
        self._undoing: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Start the layers' background work (e.g. the first fetch of signing keys)."""
        for layer in self._layers:
            if isinstance(layer, Lifecycle):
                await layer.start()

    async def stop(self) -> None:
        if self._undoing:  # let releases in progress reach the store
            await asyncio.wait(self._undoing, timeout=UNDO_TIMEOUT_S)
        for layer in self._layers:
            if isinstance(layer, Lifecycle):
                await layer.stop()

    @property
    def ready(self) -> bool:
        """Whether every layer has what it needs to decide (health reports SERVING)."""
        return all(layer.ready for layer in self._layers if isinstance(layer, Lifecycle))

    async def decide(self, view: RequestView) -> Decision:
        started = time.perf_counter_ns()
        decision_id = new_decision_id()
        current: list[LayerName | None] = [None]
        try:
            async with asyncio.timeout(self._deadline_s):
                decision = await self._run(view, decision_id, current)
        except TimeoutError:
            _log.error("decision_timeout", decision_id=decision_id, layer=current[0])
            decision = internal_denial(
                decision_id, current[0], "internal.timeout", "the authorization deadline passed"
            )
        except Exception:
            _log.exception("decision_failed", decision_id=decision_id, layer=current[0])
            decision = internal_denial(
                decision_id, current[0], "internal.error", "authorization failed internally"
            )
        latency_ns = time.perf_counter_ns() - started
        for observer in self._observers:
            observer.observe(view, decision, latency_ns)
        return decision

    async def _run(
        self, view: RequestView, decision_id: str, current: list[LayerName | None]
    ) -> Decision:
        resolution = self._routes.resolve(view.host, view.method, view.path)
        ctx = Context(
            view=view,
            decision_id=decision_id,
            route=resolution.route,
            methods_on_path=resolution.methods_on_path,
            path_params=resolution.params,
        )
        try:
            for layer in self._layers:
                current[0] = layer.name
                denial = await layer.check(ctx)
                if denial is not None:
                    self._undo_later(ctx)
                    return _deny(ctx, layer.name, denial)
        except BaseException:  # an error or the deadline: nothing stays reserved either
            self._undo_later(ctx)
            raise
        return _allow(ctx)

    def _undo_later(self, ctx: Context) -> None:
        """Take back what earlier layers did, off the request path: the answer does not
        wait for the store, and no step can run twice."""
        steps, ctx.undo = ctx.undo[::-1], []
        if steps:
            task = asyncio.get_running_loop().create_task(_undo(steps, ctx.decision_id))
            self._undoing.add(task)
            task.add_done_callback(self._undoing.discard)


async def _undo(steps: list[Callable[[], Awaitable[object]]], decision_id: str) -> None:
    for step in steps:
        try:
            async with asyncio.timeout(UNDO_TIMEOUT_S):
                await step()
        except Exception:
            _log.exception("undo_failed", decision_id=decision_id)


def _allow(ctx: Context) -> Decision:
    ctx.upstream_headers[DECISION_ID_HEADER] = ctx.decision_id
    ctx.response_headers[DECISION_ID_HEADER] = ctx.decision_id
    ctx.metadata["decision_id"] = ctx.decision_id
    return Decision(
        decision_id=ctx.decision_id,
        allowed=True,
        status=200,
        layer=None,
        reason="allowed",
        message="allowed",
        route=ctx.route.name if ctx.route else None,
        headers=ctx.upstream_headers,
        headers_to_remove=tuple(
            name for name in ctx.headers_to_remove if name not in ctx.upstream_headers
        ),
        response_headers=ctx.response_headers,
        metadata=ctx.metadata,
    )


def _deny(ctx: Context, layer: LayerName, denial: Denial) -> Decision:
    ctx.metadata["decision_id"] = ctx.decision_id
    return Decision(
        decision_id=ctx.decision_id,
        allowed=False,
        status=denial.status,
        layer=layer,
        reason=denial.reason,
        message=denial.message,
        route=ctx.route.name if ctx.route else None,
        headers={**denial.headers, DECISION_ID_HEADER: ctx.decision_id},
        details=denial.details,
        metadata=ctx.metadata,
    )


def internal_denial(
    decision_id: str, layer: LayerName | None, reason: str, message: str
) -> Decision:
    return Decision(
        decision_id=decision_id,
        allowed=False,
        status=503,
        layer=layer,
        reason=reason,
        message=message,
        headers={DECISION_ID_HEADER: decision_id, "retry-after": "1"},
        metadata={"decision_id": decision_id},
    )
