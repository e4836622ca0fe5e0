"""End to end: curl-like clients → real Envoy → real authz-service → mock upstream."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
from typing import Any

import pytest

from authz_service.devstack.run import DEMO_API_KEY, tiny_png
from authz_service.devstack.stack import Stack
from tests.helpers import Reply, http_request

pytestmark = pytest.mark.envoy

CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]})
JSON = {"content-type": "application/json"}


def edge(
    stack: Stack,
    method: str,
    path: str,
    body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    tls: bool = False,
) -> Reply:
    data = body.encode() if isinstance(body, str) else body
    if tls:
        url = f"https://localhost:{stack.ports.https}{path}"
        return http_request(method, url, data, headers, cafile=stack.certs_dir / "dev.crt")
    return http_request(method, f"http://127.0.0.1:{stack.ports.http}{path}", data, headers)


def upstream_count(stack: Stack, path: str) -> int:
    stats = http_request("GET", f"http://127.0.0.1:{stack.ports.hosted}/__stats").json()
    count: int = stats["requests"].get(path, 0)
    return count


def recorded_lines(stack: Stack) -> list[str]:
    recording = stack.run_dir / "requests.jsonl"
    return recording.read_text().splitlines() if recording.exists() else []


def recorded_request(stack: Stack, marker: str) -> str:
    """The recorded CheckRequest whose ``x-test-marker`` header is ``marker`` (the recorder
    writes off the event loop, so wait for it). Header values are recorded as raw bytes,
    which protobuf JSON writes in base64."""
    encoded = base64.b64encode(marker.encode()).decode()
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in recorded_lines(stack) if encoded in line]
        if found or time.monotonic() > deadline:
            assert len(found) == 1, f"{len(found)} recorded requests carry {marker}"
            return found[0]
        time.sleep(0.02)


def stack_log(stack: Stack) -> str:
    return stack.log_path("authz").read_text()


def decision_log(stack: Stack, decision_id: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 5
    while True:
        lines = [
            json.loads(line)
            for line in stack.log_path("authz").read_text().splitlines()
            if line.startswith("{")
        ]
        found = [line for line in lines if line.get("decision_id") == decision_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def bearer(token: str) -> dict[str, str]:
    return {**JSON, "authorization": f"Bearer {token}"}


@pytest.mark.parametrize("tls", [False, True], ids=["http", "tls"])
def test_allowed_chat_reaches_the_model(demo_stack: Stack, demo_token: str, tls: bool) -> None:
    reply = edge(demo_stack, "POST", "/v1/chat/completions", CHAT, bearer(demo_token), tls=tls)
    assert reply.status == 200
    assert reply.headers["x-mock-provider"] == "hosted"
    assert reply.json()["usage"]["total_tokens"] > 0
    decision_id = reply.headers["x-authz-decision-id"]
    (logged,) = decision_log(demo_stack, decision_id)
    assert logged["allowed"] is True and logged["route"] == "chat"
    assert (logged["subject"], logged["tier"], logged["auth"]) == ("alice", "pro", "jwt")
    assert demo_token not in stack_log(demo_stack)
    assert logged["request_id"]  # Envoy's x-request-id
    assert isinstance(logged["latency_us"], int)


def test_malformed_json_never_reaches_the_classifier(demo_stack: Stack) -> None:
    before = upstream_count(demo_stack, "/v1/classify")
    reply = edge(demo_stack, "POST", "/v1/classify", '{"image": "iVBOR', JSON)
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["code"] == "protocol.invalid_json"
    assert "line 1 column 17" in error["message"]
    assert error["decision_id"] == reply.headers["x-authz-decision-id"]
    assert upstream_count(demo_stack, "/v1/classify") == before
    (logged,) = decision_log(demo_stack, error["decision_id"])
    assert (logged["layer"], logged["reason"], logged["status"]) == (
        "protocol",
        "protocol.invalid_json",
        400,
    )


def test_a_valid_image_is_classified(demo_stack: Stack) -> None:
    image = base64.b64encode(tiny_png()).decode()
    api_key = {**JSON, "x-api-key": DEMO_API_KEY}
    reply = edge(
        demo_stack, "POST", "/v1/classify", json.dumps({"image": image, "top_k": 2}), api_key
    )
    assert reply.status == 200, reply.body
    assert len(reply.json()["predictions"]) == 2


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("GET", "/v1/chat/completions", None, {}, 405, "protocol.method_not_allowed"),
        (
            "POST",
            "/v1/chat/completions",
            "hi",
            {"content-type": "text/plain"},
            415,
            "protocol.unsupported_media_type",
        ),
        ("POST", "/v1/chat/completions", "", JSON, 400, "protocol.body_required"),
        ("GET", "/nowhere", None, {}, 404, "protocol.route_not_found"),
        ("POST", "/echo", b"caf\xc3", {"content-type": "text/plain"}, 400, "protocol.invalid_utf8"),
        (
            "POST",
            "/v1/chat/completions",
            '{"a":' * 40 + "1" + "}" * 40,
            JSON,
            400,
            "protocol.json_too_deep",
        ),
    ],
)
def test_denials_through_envoy(
    demo_stack: Stack,
    method: str,
    path: str,
    body: str | None,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    reply = edge(demo_stack, method, path, body, headers)
    assert reply.status == status, reply.body
    assert reply.json()["error"]["code"] == code
    if status == 405:
        assert reply.headers["allow"] == "POST"


def test_oversized_body_gets_413_from_the_service(demo_stack: Stack) -> None:
    body = b'{"image": "' + b"A" * (5 * 1024 * 1024) + b'"}'  # classify allows 4 MiB
    reply = edge(demo_stack, "POST", "/v1/classify", body, JSON)
    assert (reply.status, reply.json()["error"]["code"]) == (413, "protocol.body_too_large")


def test_body_beyond_the_edge_buffer_is_413(demo_stack: Stack) -> None:
    # More than Envoy buffers for ext_authz (8 MiB): the service sees a truncated body.
    body = b"x" * (9 * 1024 * 1024)
    reply = edge(demo_stack, "POST", "/echo", body, {"content-type": "application/octet-stream"})
    assert reply.status == 413
    assert reply.json()["error"]["code"] in ("protocol.body_too_large", "protocol.body_truncated")


def test_unknown_methods_never_reach_the_service(demo_stack: Stack) -> None:
    reply = edge(demo_stack, "FOO", "/echo")
    assert reply.status in (400, 405)
    assert "x-authz-decision-id" not in reply.headers


def test_binary_body_arrives_byte_for_byte(demo_stack: Stack) -> None:
    png = tiny_png() + bytes(range(256))
    reply = edge(demo_stack, "POST", "/echo", png, {"content-type": "application/octet-stream"})
    assert reply.status == 200
    assert reply.json()["body_sha256"] == hashlib.sha256(png).hexdigest()
    wanted = base64.b64encode(png).decode()
    deadline = time.monotonic() + 5
    while not any(wanted in line for line in recorded_lines(demo_stack)):
        assert time.monotonic() < deadline, "the service never got the PNG intact"
        time.sleep(0.02)  # what the service got, not only the upstream


def test_spoofed_internal_headers_are_stripped(demo_stack: Stack) -> None:
    headers = {"x-authz-tier": "pro", "X-Authz-Decision-Id": "forged", "x-authz-anything": "1"}
    reply = edge(demo_stack, "GET", "/echo", None, headers)
    assert reply.status == 200
    seen = reply.json()["headers"]
    assert "x-authz-anything" not in seen
    assert seen["x-authz-tier"] == "anonymous"  # ours, not the client's "pro"
    assert seen["x-authz-decision-id"] == reply.headers["x-authz-decision-id"] != "forged"


def test_check_gives_the_same_decision_as_envoy(demo_stack: Stack, demo_token: str) -> None:
    requests = [
        ("POST", "/v1/chat/completions", CHAT, bearer(demo_token), 200),
        ("POST", "/v1/chat/completions", CHAT, JSON, 401),
        ("POST", "/v1/classify", "{nope", JSON, 400),
        ("DELETE", "/v1/chat/completions", None, {}, 405),
        ("GET", "/nowhere", None, {}, 404),
    ]
    for number, (method, path, body, headers, status) in enumerate(requests):
        # A marker finds this request among those recorded (earlier tests' may still be
        # on their way to the file).
        marker = f"check-parity-{number}-{time.monotonic_ns()}"
        reply = edge(demo_stack, method, path, body, {**headers, "x-test-marker": marker})
        assert reply.status == status
        recorded = recorded_request(demo_stack, marker)
        offline = subprocess.run(
            [sys.executable, "-m", "authz_service", "check", "--config", str(demo_stack.policy)],
            input=recorded,
            capture_output=True,
            text=True,
            check=True,
        )
        decision = json.loads(offline.stdout)
        assert decision["status"] == status
        assert decision["allowed"] == (status == 200)
        if status != 200:
            assert decision["reason"] == reply.json()["error"]["code"]
            assert decision["message"] == reply.json()["error"]["message"]


def test_metrics_count_decisions(demo_stack: Stack) -> None:
    edge(demo_stack, "GET", "/nowhere")
    metrics = http_request("GET", f"http://127.0.0.1:{demo_stack.ports.metrics}/metrics")
    assert metrics.status == 200
    assert 'reason="protocol.route_not_found",status="404"' in metrics.body.decode()


def test_envoy_access_log_carries_the_decision_id(demo_stack: Stack) -> None:
    reply = edge(demo_stack, "GET", "/echo/access-log")
    decision_id = reply.headers["x-authz-decision-id"]
    deadline = time.monotonic() + 5
    while decision_id not in demo_stack.log_path("envoy").read_text():
        assert time.monotonic() < deadline, "decision id not in Envoy's access log"
        time.sleep(0.1)


def test_run_prints_commands_that_name_the_stack_ports(demo_stack: Stack) -> None:
    from authz_service.devstack.run import commands

    text = commands(demo_stack.ports)
    assert f"http://127.0.0.1:{demo_stack.ports.http}/v1/chat/completions" in text
    assert f"https://127.0.0.1:{demo_stack.ports.https}" in text


def test_invalid_utf8_in_a_header_is_400(demo_stack: Stack) -> None:
    # http.client sends str headers as latin-1, so "\xff" goes out as the raw byte 0xFF.
    reply = edge(demo_stack, "GET", "/echo", None, {"x-note": "caf\xe9 \xff"})
    assert reply.status == 400
    error = reply.json()["error"]
    assert error["code"] == "protocol.invalid_header_encoding"
    assert "x-note" in error["message"]
