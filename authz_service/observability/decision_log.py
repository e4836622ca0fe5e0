"""One JSON line per decision: enough to trace a request, never a secret or a body.

Decisions are the hot path of logging, so they skip structlog (which the rest of the
service logs through): the line is one dict serialized by orjson, ~2.5x cheaper than the
same line through a bound logger's processor chain. Lines are appended to a buffer that
:meth:`DecisionLog.flush` writes out (the server does so every 200 ms and at shutdown)
instead of one system call each. The shape matches the service's other log lines: an
``event`` and an ISO-8601 UTC ``timestamp``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, BinaryIO

import orjson

from authz_service.decision import Decision
from authz_service.request_view import RequestView

FLUSH_INTERVAL_S = 0.2

_FROM_METADATA = (
    # (log key, decision metadata key)
    ("subject", "subject"),
    ("tenant", "tenant"),
    ("tier", "tier"),
    ("auth", "auth_method"),
    ("credential_id", "credential_id"),
    ("would_deny", "would_deny"),
    ("flagged", "flagged"),
    ("injection", "injection"),
    ("quota_store", "quota_store"),
    ("reservation_id", "reservation_id"),
    ("prompt_tokens", "prompt_tokens"),
    ("reserved_tokens", "reserved_tokens"),
    ("provider", "provider"),
    ("provider_reason", "provider_reason"),
    ("served_model", "served_model"),
    ("reserved_cost", "reserved_cost"),
)


class DecisionLog:
    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def flush(self) -> None:
        self._stream.flush()

    def observe(self, view: RequestView, decision: Decision, latency_ns: int) -> None:
        metadata = decision.metadata
        line: dict[str, Any] = {
            "event": "decision",
            "decision_id": decision.decision_id,
            "request_id": view.request_id,
            "route": decision.route,
            "method": view.method,
            "path": view.path,
            # query values and headers can carry tokens or prompts: only the query's keys
            "query_keys": [pair.partition("=")[0] for pair in view.query.split("&") if pair],
            "allowed": decision.allowed,
            "status": decision.status,
            "layer": decision.layer,
            "reason": decision.reason,
        }
        for key, source in _FROM_METADATA:
            line[key] = metadata.get(source)
        line["latency_us"] = latency_ns // 1000
        line["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        self._stream.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
