"""The cost layer end to end: client → real Envoy → real service → real Redis → mock model.

A trial user spends the tiny demo budget and gets a 429 a client can act on; `quota show`
and `quota reset` work on the same Redis; a long prompt costs more; and with the service's
own Redis stopped mid-run, the configured fail mode holds without waiting, then normal
service resumes when Redis is back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from grpc_health.v1 import health_pb2

from authz_service.devstack.idp import mint_token
from authz_service.devstack.stack import DEMO_POLICY, Ports, Stack, service_health
from tests.helpers import http_request
from tests.redis_cluster import free_port
from tests.test_through_envoy import JSON, decision_log, edge

pytestmark = pytest.mark.envoy
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def chat_body(text: str = "Hello!", max_tokens: int = 200) -> str:
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": text}],
        }
    )


def bearer(stack: Stack, subject: str, tier: str) -> dict[str, str]:
    token = mint_token(stack.idp_dir, issuer=stack.issuer, subject=subject, tier=tier)
    return {**JSON, "authorization": f"Bearer {token}"}


def chat_requests(stack: Stack) -> int:
    """Chat requests the two mock providers received (the routing layer picks one)."""
    total = 0
    for port in (stack.ports.hosted, stack.ports.selfhosted):
        stats = http_request("GET", f"http://127.0.0.1:{port}/__stats").json()
        total += stats["requests"].get("/v1/chat/completions", 0)
    return total


def quota(command: str, subject: str, tier: str, redis_url: str) -> Any:
    result = subprocess.run(
        [sys.executable, "-m", "authz_service", "quota", command, "--config", str(DEMO_POLICY),
         "--redis-url", redis_url, "--user", subject, "--tenant", "demo", "--tier", tier],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def test_trial_budget_spent_then_429_then_reset_by_the_operator(
    demo_stack: Stack, redis_url: str
) -> None:
    subject = f"trial-{uuid.uuid4().hex[:8]}"
    headers = bearer(demo_stack, subject, "trial")
    before = chat_requests(demo_stack)
    replies = []
    for _ in range(8):
        replies.append(edge(demo_stack, "POST", "/v1/chat/completions", chat_body(), headers))
        if replies[-1].status != 200:
            break
    allowed, denied = replies[:-1], replies[-1]
    assert 2 <= len(allowed) <= 6, [reply.status for reply in replies]
    remaining = [int(reply.headers["x-ratelimit-remaining-tokens"]) for reply in allowed]
    assert remaining == sorted(remaining, reverse=True)
    assert all(reply.headers["x-ratelimit-limit-tokens"] == "1000" for reply in allowed)
    assert chat_requests(demo_stack) == before + len(allowed)  # the 429 reached no model

    assert denied.status == 429
    error = denied.json()["error"]
    assert error["code"] == "cost.limit_exceeded" and error["decision_id"]
    assert error["details"]["name"] == "user-tokens-per-day"
    assert error["details"]["scope"] == f"user={subject}"
    assert error["details"]["window"] == "day" and error["details"]["limit"] == 1000
    assert error["details"]["remaining"] == remaining[-1]
    assert int(denied.headers["retry-after"]) > 0
    for kind in ("tokens", "requests"):
        for field in ("limit", "remaining", "reset"):
            assert denied.headers[f"x-ratelimit-{field}-{kind}"]

    shown = {entry["name"]: entry for entry in quota("show", subject, "trial", redis_url)["limits"]}
    assert shown["user-tokens-per-day"]["used"] == 1000 - remaining[-1]
    assert shown["user-requests-per-minute"]["used"] == len(allowed)
    assert set(quota("reset", subject, "trial", redis_url)["reset"]) == {
        "user-tokens-per-day",
        "user-requests-per-minute",
        "user-in-flight",
        "classifier-requests-per-second",
    }  # the principal's own counters; the tenant's monthly budget is shared and stays
    again = edge(demo_stack, "POST", "/v1/chat/completions", chat_body(), headers)
    assert again.status == 200
    assert int(again.headers["x-ratelimit-remaining-tokens"]) == remaining[0]


def test_a_long_prompt_costs_more_than_a_short_one(demo_stack: Stack) -> None:
    headers = bearer(demo_stack, f"pro-{uuid.uuid4().hex[:8]}", "pro")
    spent = []
    for text in ("Hi", "The quick brown fox jumps over the lazy dog. " * 120):
        reply = edge(demo_stack, "POST", "/v1/chat/completions", chat_body(text, 10), headers)
        assert reply.status == 200
        spent.append(int(reply.headers["x-ratelimit-remaining-tokens"]))
    short_cost = 2_000_000 - spent[0]
    long_cost = spent[0] - spent[1]
    assert short_cost < 30 < 1000 < long_cost


# ---- the service's own Redis, stopped and started mid-run ----------------------------------


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while (
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, check=False
            ).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def redis_then_stack(tmp_path: Path) -> Iterator[tuple[PrivateRedis, Stack]]:
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    try:
        with Stack(tmp_path / "stack", Ports.free(), env={"REDIS_URL": redis_server.url}) as stack:
            try:
                yield redis_server, stack
            finally:
                stack.stop()
    finally:
        redis_server.stop()


def timed(stack: Stack, headers: dict[str, str]) -> tuple[int, float]:
    started = time.monotonic()
    reply = edge(stack, "POST", "/v1/chat/completions", chat_body(max_tokens=5), headers)
    return reply.status, time.monotonic() - started


def test_redis_down_fails_closed_fast_and_recovers(
    redis_then_stack: tuple[PrivateRedis, Stack],
) -> None:
    redis_server, stack = redis_then_stack
    headers = bearer(stack, "alice", "pro")
    assert timed(stack, headers)[0] == 200

    redis_server.stop()
    outcomes = [timed(stack, headers) for _ in range(10)]
    assert {status for status, _ in outcomes} == {503}
    assert max(seconds for _, seconds in outcomes) < 1.0
    denial = edge(stack, "POST", "/v1/chat/completions", chat_body(max_tokens=5), headers)
    error = denial.json()["error"]
    assert error["code"] == "cost.store_unavailable"  # the service's answer, not Envoy's
    logged = decision_log(stack, error["decision_id"])
    assert logged[0]["latency_us"] < 50_000  # the breaker is open: no wait for Redis at all
    wait_for_health(stack, NOT_SERVING)  # readiness reflects the missing store
    metrics = edge_metrics(stack)
    assert 'authz_quota_decisions_total{store="unavailable"}' in metrics

    redis_server.start()
    deadline = time.monotonic() + 10
    while timed(stack, headers)[0] != 200:
        assert time.monotonic() < deadline, "service did not resume after Redis came back"
        time.sleep(0.2)
    wait_for_health(stack, SERVING)


def wait_for_health(stack: Stack, status: int) -> None:
    """Readiness is re-evaluated every 0.2 s by the service."""
    deadline = time.monotonic() + 5
    while service_health(stack.ports.authz) != status:
        assert time.monotonic() < deadline, f"health never became {status}"
        time.sleep(0.1)


def edge_metrics(stack: Stack) -> str:
    return http_request("GET", f"http://127.0.0.1:{stack.ports.metrics}/metrics").body.decode()


def test_in_flight_leases_end_when_envoy_reports_the_request_done(demo_stack: Stack) -> None:
    """The demo allows a free user 8 requests in flight; Envoy's access-log stream tells
    the service each one finished, so 12 one after the other all pass."""
    headers = bearer(demo_stack, f"lease-{uuid.uuid4().hex[:8]}", "free")
    statuses = []
    for _ in range(12):
        statuses.append(
            edge(demo_stack, "POST", "/v1/chat/completions", chat_body("Hi", 5), headers).status
        )
        time.sleep(0.3)  # Envoy flushes the access log every 0.1 s
    assert statuses == [200] * 12
