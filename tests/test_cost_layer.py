"""The cost layer through the real pipeline (embedded store unless said otherwise): token
budgets per tier, request rates, in-flight leases, the 429 a client can act on, the headers
on allowed requests, fail modes with a Redis that is not there, and policy validation."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from authz_service.envoy_codec import request_view
from authz_service.layers.cost.backend import QuotaBackend, open_backend
from authz_service.pipeline import Pipeline
from authz_service.policy import load_policy
from tests.helpers import TIER_KEYS, api_key_identity, check_request, decide_chat, write_policy

POLICY = f"""
    version: 1
{api_key_identity(tenants={"free": "acme", "pro": "acme", "trial": "other"})}
    cost:
      store: {{ timeout_ms: 50, on_failure: deny, breaker_failures: 2, breaker_open_s: 30 }}
      models:
        gpt-4o-mini:
          {{ tokenizer: o200k_base, default_output_tokens: 100, max_output_tokens: 1000 }}
      limits:
        - name: tokens-per-day
          per: [user]
          window: day
          tokens: {{ trial: 600, "*": 100000 }}
        - name: requests-per-minute
          per: [user]
          window: minute
          requests: {{ free: 3, "*": 1000 }}
        - name: tenant-in-flight
          per: [tenant]
          in_flight: {{ pro: 2 }}
          lease_s: 60
    routes:
      - name: chat
        match: {{ path: {{ exact: /v1/chat/completions }}, methods: [POST] }}
        syntax: {{ llm: {{ api: openai.chat_completions }} }}
        cost: {{}}
      - name: free-for-all
        match: {{ path: {{ prefix: /open }} }}
"""


def chat(text: str = "Hi", **extra: Any) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}
    return json.dumps(body).encode()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY)


def pipeline_for(policy_file: Path, **backend: Any) -> Pipeline:
    return Pipeline(load_policy(policy_file), quota=QuotaBackend(**backend))


def test_a_tiny_budget_is_spent_then_429_with_the_limit_named(policy_file: Path) -> None:
    pipeline = pipeline_for(policy_file)
    remaining = []
    for _ in range(10):
        decision = decide_chat(pipeline, "trial", chat(max_tokens=100))
        if not decision.allowed:
            break
        remaining.append(int(decision.response_headers["x-ratelimit-remaining-tokens"]))
        assert decision.headers["x-authz-reservation"]
    assert not decision.allowed and 3 <= len(remaining) <= 5
    assert remaining == sorted(remaining, reverse=True)
    assert decision.status == 429 and decision.reason == "cost.limit_exceeded"
    details = decision.error_body()["error"]["details"]
    assert details["name"] == "tokens-per-day" and details["scope"] == "user=trial"
    assert details["window"] == "day" and details["limit"] == 600
    assert details["remaining"] == remaining[-1] < details["requested"]
    assert int(decision.headers["retry-after"]) == details["reset_s"] > 0
    assert decision.headers["x-ratelimit-limit-tokens"] == "600"
    assert decision.headers["x-ratelimit-remaining-tokens"] == str(remaining[-1])
    assert decision.headers["x-ratelimit-reset-tokens"].endswith("s")
    assert decision.headers["x-ratelimit-limit-requests"] == "1000"
    assert "tokens-per-day" in decision.message


def test_a_denied_request_charges_nothing(policy_file: Path) -> None:
    """All or nothing: the request limit is not charged when the token limit refuses."""
    pipeline = pipeline_for(policy_file)
    too_big = chat(max_tokens=1000)  # ~1010 tokens > 600
    for _ in range(3):
        assert decide_chat(pipeline, "trial", too_big).status == 429
    allowed = decide_chat(pipeline, "trial", chat(max_tokens=10))
    assert allowed.allowed
    assert allowed.response_headers["x-ratelimit-remaining-requests"] == "999"


def test_a_long_prompt_costs_more_than_a_short_one(policy_file: Path) -> None:
    pipeline = pipeline_for(policy_file)
    short = decide_chat(pipeline, "pro", chat("Hi", max_tokens=10))
    long = decide_chat(pipeline, "pro", chat("lorem ipsum dolor " * 200, max_tokens=10))
    spent_short = 100000 - int(short.response_headers["x-ratelimit-remaining-tokens"])
    remaining_after_long = int(long.response_headers["x-ratelimit-remaining-tokens"])
    spent_long = 100000 - spent_short - remaining_after_long
    assert spent_short < 30 and spent_long > 600
    assert int(long.metadata["prompt_tokens"]) > 600
    assert long.metadata["reserved_tokens"] == str(int(long.metadata["prompt_tokens"]) + 10)


def test_requests_per_minute_for_the_free_tier(policy_file: Path) -> None:
    pipeline = pipeline_for(policy_file)
    statuses = [decide_chat(pipeline, "free", chat(max_tokens=5)).status for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    denial = decide_chat(pipeline, "free", chat(max_tokens=5))
    details = denial.error_body()["error"]["details"]
    assert details["name"] == "requests-per-minute" and details["kind"] == "requests"
    assert denial.headers["x-ratelimit-remaining-requests"] == "0"
    assert 1 <= int(denial.headers["retry-after"]) <= 60


def test_in_flight_leases_are_released_by_settling(policy_file: Path) -> None:
    backend = QuotaBackend()
    pipeline = pipeline_for(policy_file, store=backend.store)
    first = decide_chat(pipeline, "pro", chat(max_tokens=5))
    second = decide_chat(pipeline, "pro", chat(max_tokens=5))
    third = decide_chat(pipeline, "pro", chat(max_tokens=5))
    assert (first.allowed, second.allowed, third.status) == (True, True, 429)
    assert third.error_body()["error"]["details"]["name"] == "tenant-in-flight"
    assert asyncio.run(backend.store.settle(first.metadata["reservation_id"], 3))
    assert decide_chat(pipeline, "pro", chat(max_tokens=5)).allowed


def test_routes_without_cost_are_not_charged(policy_file: Path) -> None:
    pipeline = pipeline_for(policy_file)
    request = check_request("GET", "/open", headers={"x-api-key": TIER_KEYS["free"]})
    for _ in range(5):
        decision = asyncio.run(pipeline.decide(request_view(request)))
        assert decision.allowed and "x-ratelimit-remaining-requests" not in decision.headers


def _dead_redis_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_store_down_fails_closed_and_the_breaker_stops_waiting(policy_file: Path) -> None:
    backend = open_backend(_dead_redis_url())
    pipeline = pipeline_for(policy_file, store=backend.store, name=backend.name)
    decisions, durations = [], []
    for _ in range(6):
        started = time.perf_counter()
        decisions.append(decide_chat(pipeline, "pro", chat()))
        durations.append(time.perf_counter() - started)
    assert {(d.status, d.reason) for d in decisions} == {(503, "cost.store_unavailable")}
    assert all(d.metadata["quota_store"] == "unavailable" for d in decisions)
    assert decisions[0].headers["retry-after"] == "1"
    assert max(durations) < 0.45  # never past the decision deadline
    assert not pipeline.ready  # fail closed: readiness says the store is missing


def test_store_down_with_fallback_admits_against_local_limits(policy_file: Path) -> None:
    text = POLICY.replace("on_failure: deny", "on_failure: fallback, fallback_scale: 0.5")
    backend = open_backend(_dead_redis_url())
    fallback_policy = write_policy(policy_file.parent, text)
    pipeline = pipeline_for(fallback_policy, store=backend.store, name=backend.name)
    first = decide_chat(pipeline, "trial", chat(max_tokens=100))
    assert first.allowed and first.metadata["quota_store"] == "fallback"
    assert first.response_headers["x-ratelimit-limit-tokens"] == "300"  # 600 x 0.5
    statuses = [decide_chat(pipeline, "trial", chat(max_tokens=100)).status for _ in range(3)]
    assert statuses[-1] == 429  # the local limit holds while the store is down
    assert pipeline.ready  # fail open: still serving


@pytest.mark.parametrize(
    ("replace", "by", "problem"),
    [
        ("cost: {}", "cost: { limits: [nope] }", "routes[0].cost.limits[0]"),
        ("syntax: { llm: { api: openai.chat_completions } }", "syntax: {}", "counts tokens"),
        ("per: [user]\n          window: day", "per: [user]\n          window: fortnight",
         "cost.limits[0].window"),
        ("lease_s: 60", "lease_s: 60\n          overrides: { acme: 5 }", "tenant=..."),
    ],
)  # fmt: skip
def test_validate_names_the_file_and_key(
    policy_file: Path, replace: str, by: str, problem: str
) -> None:
    assert replace in POLICY
    policy_file.write_text(POLICY.replace(replace, by))
    result = subprocess.run(
        [sys.executable, "-m", "authz_service", "validate", "--config", str(policy_file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert str(policy_file) in result.stderr and problem in result.stderr


SCOPES = f"""
    version: 1
{api_key_identity(tenants={"free": "acme", "pro": "acme", "trial": "other"})}
    cost:
      limits:
        - name: per-key
          per: [api_key]
          window: hour
          requests: 2
          overrides: {{ "api_key=pro-key": 4 }}
        - name: per-model
          per: [model]
          window: hour
          requests: {{ "*": 5 }}
        - name: per-ip
          per: [ip]
          window: rolling 1h
          requests: 100
    routes:
      - name: chat
        match: {{ path: {{ exact: /v1/chat/completions }}, methods: [POST] }}
        syntax: {{ llm: {{ api: openai.chat_completions }} }}
        cost: {{}}
"""


def test_scopes_overrides_and_tiers(tmp_path: Path) -> None:
    """An override beats the tier's amount; a model limit is shared by every principal
    asking for that model (and only that model); an IP limit rides along."""
    pipeline = pipeline_for(write_policy(tmp_path, SCOPES))
    free = [decide_chat(pipeline, "free", chat()) for _ in range(3)]
    assert [d.status for d in free] == [200, 200, 429]
    assert free[2].error_body()["error"]["details"]["scope"] == "api_key=free-key"
    pro = [decide_chat(pipeline, "pro", chat()) for _ in range(4)]
    assert [d.status for d in pro] == [200, 200, 200, 429]  # 4 for the key, but 5 per model
    details = pro[3].error_body()["error"]["details"]
    assert (details["name"], details["scope"]) == ("per-model", "model=gpt-4o-mini")
    other_model = decide_chat(pipeline, "trial", chat(model="gpt-4o"))
    assert other_model.allowed
    assert other_model.response_headers["x-ratelimit-remaining-requests"] == "1"  # its key


def test_a_request_larger_than_the_whole_budget_is_told_so(policy_file: Path) -> None:
    """Waiting would not help: its own code, and no Retry-After."""
    pipeline = pipeline_for(policy_file)
    decision = decide_chat(pipeline, "trial", chat(max_tokens=1000))  # > 600
    assert (decision.status, decision.reason) == (429, "cost.request_exceeds_limit")
    assert "retry-after" not in decision.headers
    assert "never fit" in decision.message
