"""The decision log line: what an operator traces a request by, and what it must never hold."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

from authz_service.decision import Decision
from authz_service.observability.decision_log import DecisionLog
from authz_service.request_view import RequestView

SECRET = "sk-live-0123456789"


def _logged(decision: Decision, view: RequestView) -> list[dict[str, object]]:
    stream = io.BytesIO()
    log = DecisionLog(stream)
    log.observe(view, decision, latency_ns=1_234_567)
    log.flush()
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_line_per_decision_with_the_principal_and_no_secrets() -> None:
    view = RequestView(
        method="POST",
        path="/v1/chat/completions",
        query=f"api_key={SECRET}&stream",
        request_id="req-1",
        headers=MappingProxyType({"authorization": f"Bearer {SECRET}"}),
        body=f'{{"prompt": "{SECRET}"}}'.encode(),
    )
    decision = Decision(
        decision_id="d-1",
        allowed=False,
        status=403,
        layer="semantics",
        reason="semantics.rule.model-for-tier",
        message="denied",
        route="chat",
        metadata={"subject": "alice", "tier": "free", "auth_method": "jwt", "injection": "x"},
    )
    stream_lines = _logged(decision, view)
    assert len(stream_lines) == 1
    (line,) = stream_lines
    assert line["event"] == "decision"
    assert (line["decision_id"], line["request_id"], line["route"]) == ("d-1", "req-1", "chat")
    assert (line["allowed"], line["status"], line["layer"]) == (False, 403, "semantics")
    assert line["reason"] == "semantics.rule.model-for-tier"
    assert (line["subject"], line["tier"], line["auth"]) == ("alice", "free", "jwt")
    assert line["tenant"] is None and line["injection"] == "x"
    assert line["query_keys"] == ["api_key", "stream"]
    assert line["latency_us"] == 1234
    stamped = datetime.fromisoformat(str(line["timestamp"]))
    assert str(line["timestamp"]).endswith("Z")
    assert abs(datetime.now(UTC) - stamped) < timedelta(minutes=1)
    assert SECRET not in json.dumps(line)


def test_lines_stay_buffered_until_flushed() -> None:
    sink = io.BytesIO()
    buffered = io.BufferedWriter(sink, buffer_size=1 << 16)
    log = DecisionLog(buffered)
    decision = Decision(decision_id="d-2", allowed=True, status=200, layer=None,
                        reason="allowed", message="allowed")  # fmt: skip
    log.observe(RequestView(), decision, latency_ns=0)
    assert sink.getvalue() == b""
    log.flush()
    assert json.loads(sink.getvalue())["decision_id"] == "d-2"
