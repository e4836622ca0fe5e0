"""One JSON line per decision: enough to trace a request, never a secret or a body.

Decisions are the hot path of logging, so they get their own structlog logger: a short
processor chain, and lines appended to a buffer that :meth:`DecisionLog.flush` writes out
(the server does so every 200 ms and at shutdown) instead of one system call each.
"""

from __future__ import annotations

from typing import BinaryIO

import orjson
import structlog

from authz_service.decision import Decision
from authz_service.request_view import RequestView

FLUSH_INTERVAL_S = 0.2


class _LineBuffer:
    """The structlog "logger" at the end of the chain: appends rendered lines."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream

    def info(self, line: bytes) -> None:
        self.stream.write(line + b"\n")


class DecisionLog:
    def __init__(self, stream: BinaryIO) -> None:
        self._buffer = _LineBuffer(stream)
        self._log = structlog.wrap_logger(
            self._buffer,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
        )

    def flush(self) -> None:
        self._buffer.stream.flush()

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
            would_deny=metadata.get("would_deny"),
            flagged=metadata.get("flagged"),
            injection=metadata.get("injection"),
            quota_store=metadata.get("quota_store"),
            reservation_id=metadata.get("reservation_id"),
            prompt_tokens=metadata.get("prompt_tokens"),
            reserved_tokens=metadata.get("reserved_tokens"),
            provider=metadata.get("provider"),
            provider_reason=metadata.get("provider_reason"),
            served_model=metadata.get("served_model"),
            reserved_cost=metadata.get("reserved_cost"),
            latency_us=latency_ns // 1000,
        )
