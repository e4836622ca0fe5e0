"""One JSON line per decision: enough to trace a request, never a secret or a body."""

from __future__ import annotations

import structlog

from authz_service.decision import Decision
from authz_service.request_view import RequestView


class DecisionLog:
    def __init__(self) -> None:
        self._log = structlog.get_logger("authz_service.decision")

    def observe(self, view: RequestView, decision: Decision, latency_ns: int) -> None:
        # Query values and headers can carry tokens or prompts: only the query's keys.
        query_keys = [pair.partition("=")[0] for pair in view.query.split("&") if pair]
        metadata = decision.metadata
        self._log.info(
            "decision",
            decision_id=decision.decision_id,
            request_id=view.request_id,
            route=decision.route,
            method=view.method,
            path=view.path,
            query_keys=query_keys,
            allowed=decision.allowed,
            status=decision.status,
            layer=decision.layer,
            reason=decision.reason,
            subject=metadata.get("subject"),
            tenant=metadata.get("tenant"),
            tier=metadata.get("tier"),
            auth=metadata.get("auth_method"),
            credential_id=metadata.get("credential_id"),
            latency_us=latency_ns // 1000,
        )
