"""What the cost layer costs per decision, in process: the token estimate and the
reservation across three limits (tokens per day, requests per minute, tokens per month),
with the embedded store and with Redis on loopback. The baseline, measured in the same
run with the same client, is one Redis PING: a decision should cost about one round trip.
Redis's own command counters show how many commands each decision sent."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from tempfile import TemporaryDirectory

import redis.asyncio as redis

from authz_service.envoy_codec import request_view
from authz_service.layers.base import Context
from authz_service.layers.cost import CostLayer
from authz_service.layers.cost.backend import QuotaBackend, open_backend
from authz_service.layers.cost.estimator import TokenEstimator
from authz_service.layers.identity import Principal
from authz_service.policy import load_policy
from authz_service.policy.loader import route_table
from benchmarks.layer_cost import chat_body, check_request

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ROUNDS = 3000

POLICY = """
version: 1
cost:
  models: { gpt-4o-mini: { tokenizer: o200k_base } }
  limits:
    - { name: tokens-per-day, per: [user], window: day, tokens: 1000000000000 }
    - { name: requests-per-minute, per: [user], window: minute, requests: 1000000000000 }
    - { name: tenant-tokens-per-month, per: [tenant], window: month, tokens: 1000000000000 }
routes:
  - name: chat
    match: { path: { exact: /v1/chat/completions }, methods: [POST] }
    protocol: { content_types: [application/json], max_body_bytes: 262144 }
    syntax: { llm: { api: openai.chat_completions } }
    cost: {}
"""


async def per_call_us(call: Callable[[], Awaitable[object]], rounds: int = ROUNDS) -> float:
    for _ in range(100):
        await call()
    started = time.perf_counter()
    for _ in range(rounds):
        await call()
    return (time.perf_counter() - started) / rounds * 1e6


async def measure(backend: QuotaBackend, policy_file: Path) -> float:
    policy = load_policy(policy_file)
    route = route_table(policy).resolve("", "POST", "/v1/chat/completions").route
    assert route is not None and policy.cost is not None
    layer = CostLayer(policy.cost, backend, TokenEstimator(policy.cost))
    await layer.start()
    body = chat_body()
    view = request_view(check_request("/v1/chat/completions", "application/json", body))
    principal = Principal(
        subject=f"bench-{uuid.uuid4().hex[:8]}", tenant="bench", tier="pro", roles=frozenset(),
        scopes=frozenset(), method="jwt", provider="bench",
    )  # fmt: skip
    parsed = json.loads(body)

    async def one() -> None:
        ctx = Context(view=view, decision_id="d", route=route, body=body, json_body=parsed)
        ctx.principal = principal
        if await layer.check(ctx) is not None:
            raise RuntimeError("the benchmark request was denied")

    try:
        return await per_call_us(one)
    finally:
        await layer.stop()


async def evalsha_calls(client: redis.Redis) -> int:
    stats = await client.info("commandstats")
    entry = stats.get("cmdstat_evalsha", {})
    return int(entry.get("calls", 0)) if isinstance(entry, dict) else 0


async def run() -> None:
    with TemporaryDirectory() as tmp:
        policy_file = Path(tmp) / "policy.yaml"
        policy_file.write_text(POLICY)
        embedded_us = await measure(QuotaBackend(), policy_file)
        client = redis.Redis.from_url(REDIS_URL)
        try:
            ping_us = await per_call_us(client.ping)
            backend = open_backend(REDIS_URL)
            before = await evalsha_calls(client)
            redis_us = await measure(backend, policy_file)
            scripts = (await evalsha_calls(client)) - before
            await backend.store.close()
        finally:
            await client.aclose()
    decisions = ROUNDS + 100
    print("\ncost layer (estimate + reserve across 3 limits), in process, per decision:")
    print(f"  embedded store:               {embedded_us:8.1f} µs")
    print(f"  Redis on loopback:            {redis_us:8.1f} µs")
    print(f"  baseline, one Redis PING:     {ping_us:8.1f} µs")
    print(f"  ratio Redis decision / PING:  {redis_us / ping_us:8.2f}")
    print(f"  Redis scripts per decision:   {scripts / decisions:8.2f}")


def report() -> None:
    asyncio.run(run())


if __name__ == "__main__":
    report()
