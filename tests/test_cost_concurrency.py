"""Zero overshoot with real replicas: several `authz-service serve` processes share one
token budget in Redis (standalone, then a 3-master Redis Cluster started on loopback) and
answer hundreds of concurrent checks. The tokens they admit never exceed the budget, and
they stop only when the budget is (nearly) spent."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc

from authz_service.devstack.stack import service_health
from tests.helpers import TIER_KEYS, api_key_identity, check_request, write_policy
from tests.redis_cluster import free_port, stop_process

BUDGET = 20_000
REPLICAS = 3
REQUESTS_PER_REPLICA = 120
CONCURRENCY = 40

POLICY = f"""
    version: 1
    settings: {{ decision_timeout_ms: 5000 }}  # correctness under load is tested, not latency
{api_key_identity()}
    cost:
      store: {{ timeout_ms: 2000 }}
      models: {{ gpt-4o-mini: {{ tokenizer: o200k_base }} }}
      limits:
        - name: budget
          per: [user]
          window: day
          tokens: {BUDGET}
    routes:
      - name: chat
        match: {{ path: {{ exact: /v1/chat/completions }}, methods: [POST] }}
        syntax: {{ llm: {{ api: openai.chat_completions }} }}
        cost: {{}}
"""


def start_replicas(
    stack: ExitStack, policy: Path, redis_url: str, cluster: bool, logs: Path
) -> list[int]:
    ports = [free_port() for _ in range(REPLICAS)]
    for index, port in enumerate(ports):
        log = stack.enter_context((logs / f"replica-{index}.log").open("wb"))
        process = subprocess.Popen(
            [sys.executable, "-m", "authz_service", "serve", "--config", str(policy),
             "--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0",
             "--redis-url", redis_url, *(["--redis-cluster"] if cluster else [])],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(stop_process, process)
    deadline = time.monotonic() + 30
    for index, port in enumerate(ports):
        while service_health(port) != 1:
            output = (logs / f"replica-{index}.log").read_text()
            assert time.monotonic() < deadline, f"replica on {port} never served:\n{output}"
            time.sleep(0.1)
    return ports


async def hammer(ports: list[int], tenant_key: str) -> tuple[list[int], list[int]]:
    """(admitted reservations, refused request sizes) over every replica at once."""
    admitted: list[int] = []
    refused: list[int] = []
    rng = random.Random(7)

    async def one(stub: external_auth_pb2_grpc.AuthorizationStub, gate: asyncio.Semaphore) -> None:
        body = {
            "model": "gpt-4o-mini",
            "max_tokens": rng.randrange(50, 400),
            "messages": [{"role": "user", "content": "count me " * rng.randrange(1, 30)}],
        }
        request = check_request(
            "POST", "/v1/chat/completions",
            headers={"content-type": "application/json", "x-api-key": tenant_key},
            body=json.dumps(body).encode(),
        )  # fmt: skip
        async with gate:
            reply = await stub.Check(request, timeout=10)
        if reply.HasField("ok_response"):
            headers = {h.header.key: h.header.value for h in reply.ok_response.headers}
            admitted.append(int(headers["x-authz-reserved-tokens"]))
        else:
            assert reply.denied_response.status.code == 429, reply
            refused.append(json.loads(reply.denied_response.body)["error"]["details"]["requested"])

    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for port in ports]
    try:
        stubs = [external_auth_pb2_grpc.AuthorizationStub(channel) for channel in channels]
        gates = [asyncio.Semaphore(CONCURRENCY) for _ in stubs]
        await asyncio.gather(
            *(one(stub, gate) for stub, gate in zip(stubs, gates, strict=True)
              for _ in range(REQUESTS_PER_REPLICA))
        )  # fmt: skip
    finally:
        for channel in channels:
            await channel.close()
    return admitted, refused


def assert_no_overshoot(admitted: list[int], refused: list[int]) -> None:
    assert sum(admitted) <= BUDGET, f"admitted {sum(admitted)} tokens of a {BUDGET} budget"
    assert refused, "the budget was never reached: the test proves nothing"
    # Refusals only once the budget was nearly spent: the smallest refused request did not fit.
    assert sum(admitted) + min(refused) > BUDGET - max(admitted)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY)


def _fresh_user_policy(policy: Path) -> str:
    """A new principal per run, so the shared Redis never carries a previous run's usage."""
    subject = f"load-{uuid.uuid4().hex[:8]}"
    policy.write_text(policy.read_text().replace("subject: pro", f"subject: {subject}"))
    return TIER_KEYS["pro"]


def test_replicas_never_overspend_on_redis(policy: Path, tmp_path: Path, redis_url: str) -> None:
    key = _fresh_user_policy(policy)
    with ExitStack() as stack:
        ports = start_replicas(stack, policy, redis_url, False, tmp_path)
        admitted, refused = asyncio.run(hammer(ports, key))
    assert_no_overshoot(admitted, refused)


def test_replicas_never_overspend_on_redis_cluster(
    policy: Path, tmp_path: Path, cluster_url: str
) -> None:
    key = _fresh_user_policy(policy)
    with ExitStack() as stack:
        ports = start_replicas(stack, policy, cluster_url, True, tmp_path)
        admitted, refused = asyncio.run(hammer(ports, key))
    assert_no_overshoot(admitted, refused)
