"""The routing layer end to end: the service names the provider in `x-authz-provider`,
Envoy's route table sends the request there (the mock says who answered in
`x-mock-provider`), and Envoy's access-log stream tells the service how each provider
is doing — so a failing provider is avoided within a few requests and used again after
it recovers, also after Envoy has reconnected."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from authz_service.devstack.idp import mint_token
from authz_service.devstack.stack import Ports, Stack
from tests.helpers import Reply, http_request
from tests.test_cost_through_envoy import bearer
from tests.test_through_envoy import decision_log, edge

pytestmark = pytest.mark.envoy

COOLDOWN_S = 5  # deploy/policies/demo.yaml: routing.health.cooldown_s


def chat(stack: Stack, headers: dict[str, str], model: str = "gpt-4o-mini") -> Reply:
    body = json.dumps(
        {"model": model, "max_tokens": 20, "messages": [{"role": "user", "content": "Hi"}]}
    )
    return edge(stack, "POST", "/v1/chat/completions", body, headers)


def answered_by(reply: Reply) -> str:
    assert reply.status == 200, reply.body
    return reply.headers["x-mock-provider"]


def test_a_free_user_always_lands_on_the_self_hosted_provider(demo_stack: Stack) -> None:
    headers = bearer(demo_stack, f"free-{uuid.uuid4().hex[:8]}", "free")
    replies = [chat(demo_stack, headers) for _ in range(5)]
    assert {answered_by(reply) for reply in replies} == {"selfhosted"}
    assert replies[0].headers["x-authz-provider"] == "selfhosted"
    assert replies[0].headers["x-authz-provider-reason"] == "only_choice"
    logged = decision_log(demo_stack, replies[0].headers["x-authz-decision-id"])
    assert logged[0]["served_model"] == "llama-3-8b"  # gpt-4o-mini, as the policy allows
    assert float(logged[0]["reserved_cost"]) > 0


def test_a_pro_user_gets_the_cheapest_provider_within_its_latency_target(
    demo_stack: Stack,
) -> None:
    headers = bearer(demo_stack, f"pro-{uuid.uuid4().hex[:8]}", "pro")
    reply = chat(demo_stack, headers)
    assert answered_by(reply) == "hosted"
    assert reply.headers["x-authz-provider-reason"] == "cheapest_within_target"
    # A model only the self-hosted provider serves goes there, whatever the tier.
    assert answered_by(chat(demo_stack, headers, "llama-3-8b")) == "selfhosted"


def test_a_model_no_provider_serves_to_the_tier_is_refused(demo_stack: Stack) -> None:
    token = mint_token(demo_stack.idp_dir, issuer=demo_stack.issuer, tier="trial")
    headers = {"content-type": "application/json", "authorization": f"Bearer {token}"}
    reply = chat(demo_stack, headers, "gpt-4o")
    assert reply.status == 403  # the semantic rule (gpt-4o is for pro) says so first
    assert reply.json()["error"]["code"] == "semantics.rule.model-for-tier"


# ---- failure-driven routing on a stack of its own (it makes a provider fail) --------------


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with Stack(tmp_path, Ports.free()) as own:
        try:
            yield own
        finally:
            own.stop()


def set_failure_rate(stack: Stack, rate: float) -> None:
    url = f"http://127.0.0.1:{stack.ports.hosted}/__fail?rate={rate}"
    assert http_request("POST", url).status == 200


def requests_until(stack: Stack, headers: dict[str, str], provider: str, limit: int) -> int:
    """How many requests it takes until ``provider`` answers (at most ``limit``)."""
    for count in range(1, limit + 1):
        reply = chat(stack, headers)
        if reply.status == 200 and reply.headers["x-mock-provider"] == provider:
            return count
        time.sleep(0.15)  # the access log reaches the service every 0.1 s
    raise AssertionError(f"{provider} never answered within {limit} requests")


def fail_over_and_back(stack: Stack, headers: dict[str, str]) -> None:
    assert answered_by(chat(stack, headers)) == "hosted"
    set_failure_rate(stack, 1.0)
    assert requests_until(stack, headers, "selfhosted", limit=10) <= 10
    for _ in range(3):  # while the hosted provider cools down, it gets nothing
        assert answered_by(chat(stack, headers)) == "selfhosted"
    set_failure_rate(stack, 0.0)
    time.sleep(COOLDOWN_S)
    assert requests_until(stack, headers, "hosted", limit=5) <= 5
    assert answered_by(chat(stack, headers)) == "hosted"


def test_traffic_leaves_a_failing_provider_and_comes_back(stack: Stack) -> None:
    headers = bearer(stack, "alice", "pro")
    fail_over_and_back(stack, headers)
    log = stack.log_path("authz").read_text()
    assert '"event":"provider_unhealthy"' in log and '"provider":"hosted"' in log


def test_the_access_log_stream_survives_envoy_reconnecting(stack: Stack) -> None:
    headers = bearer(stack, "bob", "pro")
    assert answered_by(chat(stack, headers)) == "hosted"
    stack.stop_envoy()
    stack.start_envoy()
    fail_over_and_back(stack, headers)  # only the new stream can have reported the failures
    metrics = http_request("GET", f"http://127.0.0.1:{stack.ports.metrics}/metrics").body
    readings = dict(
        line.split(" ", 1) for line in metrics.decode().splitlines() if line.startswith("authz_a")
    )
    assert int(float(readings["authz_access_log_streams"])) >= 1
    assert int(float(readings["authz_access_log_observations_total"])) >= 5


def test_a_burst_of_anonymous_requests_from_one_address_is_cut(demo_stack: Stack) -> None:
    """Abuse protection from the cost layer: 50 anonymous requests per second per address
    on /echo (demo policy), so a burst gets 429s naming the limit."""
    time.sleep(1 - time.time() % 1)  # start at the beginning of a one-second window
    with ThreadPoolExecutor(max_workers=8) as pool:  # 150: over 50 in some second, however slow
        replies = list(pool.map(lambda _: edge(demo_stack, "GET", "/echo/burst"), range(150)))
    time.sleep(1.1)  # leave the next tests a fresh window
    statuses = [reply.status for reply in replies]
    denial = next((reply for reply in replies if reply.status == 429), None)
    assert set(statuses) == {200, 429} and denial is not None, statuses
    details = denial.json()["error"]["details"]
    assert (details["name"], details["scope"]) == ("ip-requests-per-second", "ip=127.0.0.1")
    assert denial.headers["retry-after"] == "1"
