"""The routing layer through the real pipeline, and its parts: each strategy, health from
observations (error rate, latency, cool-down and retry), the budget-low fallback, the cap
on model switches, pricing, and policy validation."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from authz_service.feedback import FeedbackHub
from authz_service.layers.routing.health import HealthBoard, Observation
from authz_service.layers.routing.settings import HealthLimits, RoutingSection, build_section
from authz_service.layers.routing.strategies import choose
from authz_service.layers.routing.switches import SwitchCounter
from authz_service.pipeline import Pipeline
from authz_service.policy import load_policy
from tests.helpers import api_key_identity, decide_chat, write_policy

PROVIDERS = """
      providers:
        - name: cheap
          models: { gpt-4o-mini: null }
          price: { input_per_1k: 0.1, output_per_1k: 0.1 }
          latency_target_ms: 1000
          weight: 1
        - name: pricey
          cluster: pricey_cluster
          models: { gpt-4o-mini: null, gpt-4o: { serve_as: gpt-4o-2024, tiers: [pro] } }
          price: { input_per_1k: 1, output_per_1k: 2 }
          tiers: [pro, free]
          latency_target_ms: 1000
          weight: 3
"""

POLICY = f"""
    version: 1
{api_key_identity()}
    cost:
      models: {{ gpt-4o-mini: {{ tokenizer: o200k_base }} }}
      limits:
        - {{ name: budget, per: [user], window: day, tokens: {{ free: 200, "*": 1000000 }} }}
    routing:
      strategy: cheapest_within_target
      model_header: x-authz-model
      low_budget_fraction: 0.5
      max_model_switches_per_minute: 2
      health: {{ min_samples: 2, max_error_rate: 0.5, cooldown_s: 60 }}
{PROVIDERS}
    routes:
      - name: chat
        match: {{ path: {{ exact: /v1/chat/completions }}, methods: [POST] }}
        syntax: {{ llm: {{ api: openai.chat_completions }} }}
        cost: {{}}
        routing: {{}}
"""


def chat(model: str = "gpt-4o-mini", max_tokens: int = 10) -> bytes:
    return json.dumps(
        {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "Hi"}]}
    ).encode()


@pytest.fixture
def hub() -> FeedbackHub:
    return FeedbackHub()


@pytest.fixture
def pipeline(tmp_path: Path, hub: FeedbackHub) -> Pipeline:
    built = Pipeline(load_policy(write_policy(tmp_path, POLICY)), feedback=hub)
    asyncio.run(built.start())
    return built


def test_the_cheapest_healthy_provider_gets_the_request(pipeline: Pipeline) -> None:
    decision = decide_chat(pipeline, "pro", chat())
    assert decision.allowed
    assert decision.headers["x-authz-provider"] == "cheap"
    assert decision.headers["x-authz-model"] == "gpt-4o-mini"
    assert decision.response_headers["x-authz-provider"] == "cheap"
    assert decision.response_headers["x-authz-provider-reason"] == "cheapest_within_target"
    prompt, reserved = (
        int(decision.metadata["prompt_tokens"]),
        int(decision.metadata["reserved_tokens"]),
    )
    expected = prompt / 1000 * 0.1 + (reserved - prompt) / 1000 * 0.1
    assert decision.headers["x-authz-reserved-cost"] == f"{expected:.6f}"


def test_model_mapping_and_tiers(pipeline: Pipeline) -> None:
    pro = decide_chat(pipeline, "pro", chat("gpt-4o"))
    assert (
        pro.headers["x-authz-provider"] == "pricey"
        and pro.headers["x-authz-model"] == "gpt-4o-2024"
    )
    trial = decide_chat(pipeline, "trial", chat("gpt-4o"))
    assert (trial.status, trial.reason) == (403, "routing.no_provider")
    assert "gpt-4o" in trial.message and "trial" in trial.message


def test_failures_reported_by_envoy_move_traffic_then_it_comes_back(
    pipeline: Pipeline, hub: FeedbackHub
) -> None:
    for _ in range(2):
        hub.observe(Observation("cheap", 503, 3.0))
    decision = decide_chat(pipeline, "pro", chat())
    assert decision.headers["x-authz-provider"] == "pricey"
    assert hub.observations == 2


def test_a_budget_running_low_picks_the_cheapest(pipeline: Pipeline, hub: FeedbackHub) -> None:
    for _ in range(3):  # make "cheap" slow: outside its latency target, still healthy
        hub.observe(Observation("cheap", 200, 1500.0))
    assert decide_chat(pipeline, "pro", chat()).headers["x-authz-provider"] == "pricey"
    # free: a 200-token budget; ~60 tokens leave 70%, ~120 leave under half -> cheapest
    first = decide_chat(pipeline, "free", chat(max_tokens=50))
    assert first.headers["x-authz-provider"] == "pricey"
    low = decide_chat(pipeline, "free", chat(max_tokens=50))
    assert low.headers["x-authz-provider"] == "cheap"
    assert low.response_headers["x-authz-provider-reason"] == "budget_low:cheapest"


def test_switching_models_to_hop_providers_is_capped(pipeline: Pipeline) -> None:
    models = ["gpt-4o-mini", "gpt-4o"] * 3
    decisions = [decide_chat(pipeline, "pro", chat(model)) for model in models]
    # the 5th asks for the model of the last admitted request again: not a switch
    assert [d.status for d in decisions] == [200, 200, 200, 429, 200, 429]
    assert decisions[3].reason == "routing.too_many_model_switches"
    assert 1 <= int(decisions[3].headers["retry-after"]) <= 60
    # Staying on one model is never capped.
    assert decide_chat(pipeline, "pro", chat("gpt-4o-mini")).allowed


# ---- the parts ---------------------------------------------------------------------------


def section(strategy: str = "cheapest") -> RoutingSection:
    import yaml

    raw = yaml.safe_load(PROVIDERS)
    built = build_section({"strategy": strategy, **raw})
    assert built is not None
    return built


def candidates(routing: RoutingSection) -> list[Any]:
    return [(p, p.models["gpt-4o-mini"]) for p in routing.providers]


def board(routing: RoutingSection, clock: list[float]) -> HealthBoard:
    limits = HealthLimits(min_samples=3, max_error_rate=0.5, cooldown_s=10)
    return HealthBoard(routing.providers, limits, clock=lambda: clock[0])


@pytest.mark.parametrize(
    ("strategy", "slow", "expected", "reason"),
    [
        ("cheapest", "cheap", "cheap", "cheapest"),
        ("fastest", "cheap", "pricey", "fastest"),
        ("cheapest_within_target", None, "cheap", "cheapest_within_target"),
        ("cheapest_within_target", "cheap", "pricey", "cheapest_within_target"),
    ],
)
def test_strategies(strategy: str, slow: str | None, expected: str, reason: str) -> None:
    routing, clock = section(strategy), [0.0]
    health = board(routing, clock)
    for provider in ("cheap", "pricey"):
        latency = 2500.0 if provider == slow else 100.0
        health.observe(Observation(provider, 200, latency))
    choice = choose(candidates(routing), routing.strategy, health, 100, 100, random.Random(1))
    assert (choice.provider.name, choice.reason) == (expected, reason)


def test_weighted_spreads_by_weight() -> None:
    routing, clock = section("weighted"), [0.0]
    health, rng = board(routing, clock), random.Random(7)
    picks = [choose(candidates(routing), "weighted", health, 1, 1, rng).provider.name
             for _ in range(4000)]  # fmt: skip
    assert 0.70 < picks.count("pricey") / len(picks) < 0.80  # weights 3 : 1


def test_health_cooldown_then_a_fresh_trial() -> None:
    routing, clock = section(), [0.0]
    health = board(routing, clock)
    cheap = routing.providers[0]
    health.observe(Observation("cheap", 500, 1.0))
    health.observe(Observation("cheap", 200, 1.0))
    assert health.available(cheap)  # 2 samples: too few to judge
    health.observe(Observation("cheap", 0, 1.0, upstream_failed=True))
    assert not health.available(cheap)  # error rate over 0.5 after 3 samples
    clock[0] = 9.9
    assert not health.available(cheap)
    clock[0] = 10.0
    assert health.available(cheap) and health.snapshot()["cheap"].samples == 0
    health.observe(Observation("pricey_cluster", 200, 8000.0))  # by Envoy's cluster name
    health.observe(Observation("pricey_cluster", 200, 8000.0))
    health.observe(Observation("pricey_cluster", 200, 8000.0))
    assert not health.available(routing.providers[1])  # latency over 3 x its 1000 ms target


def test_unknown_providers_are_ignored() -> None:
    routing, clock = section(), [0.0]
    health = board(routing, clock)
    health.observe(Observation("mock_classifier", 500, 1.0))
    assert all(health.available(p) for p in routing.providers)


def test_switch_counter_window() -> None:
    clock = [0.0]
    counter = SwitchCounter(1, clock=lambda: clock[0])
    assert counter.allow("p", "a", "x") is None
    assert counter.allow("p", "b", "y") is None  # first switch
    assert counter.allow("p", "a", "x") == 60.0  # second: refused until the minute ends
    assert counter.allow("p", "b", "y") is None  # same model and provider as last time
    clock[0] = 61.0
    assert counter.allow("p", "a", "x") is None


@pytest.mark.parametrize(
    ("replace", "by", "problem"),
    [
        ("- name: pricey", "- name: cheap", "provider 'cheap' is used twice"),
        ("strategy: cheapest_within_target", "strategy: random", "routing.strategy"),
        ("routing:\n      strategy", "elsewhere:\n      strategy", "no providers are declared"),
    ],
)
def test_validate_names_the_problem(tmp_path: Path, replace: str, by: str, problem: str) -> None:
    assert replace in POLICY
    file = write_policy(tmp_path, POLICY.replace(replace, by))
    result = subprocess.run(
        [sys.executable, "-m", "authz_service", "validate", "--config", str(file)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and problem in result.stderr, result.stderr


def test_a_request_refused_after_its_reservation_is_not_charged(pipeline: Pipeline) -> None:
    """The cost layer reserves, then routing refuses: the reservation is released."""
    refused = decide_chat(pipeline, "free", chat("gpt-4o", max_tokens=100))  # pro-only mapping
    assert (refused.status, refused.reason) == (403, "routing.no_provider")
    allowed = decide_chat(pipeline, "free", chat(max_tokens=10))
    spent = int(allowed.metadata["reserved_tokens"])
    assert allowed.response_headers["x-ratelimit-remaining-tokens"] == str(200 - spent)


def test_a_slow_average_is_forgotten_so_the_provider_is_measured_again() -> None:
    routing, clock = section("cheapest_within_target"), [0.0]
    health = board(routing, clock)
    for _ in range(3):  # slow, but not slow enough for a cool-down: simply not chosen
        health.observe(Observation("cheap", 200, 1500.0))
    pick = choose(candidates(routing), routing.strategy, health, 1, 1, random.Random(1))
    assert pick.provider.name == "pricey"
    clock[0] = 10.1  # cooldown_s without news of it
    pick = choose(candidates(routing), routing.strategy, health, 1, 1, random.Random(1))
    assert pick.provider.name == "cheap"


def test_access_log_entries_become_observations() -> None:
    from envoy.data.accesslog.v3 import accesslog_pb2

    from authz_service.server.access_log import finished_reservation, observation

    entry = accesslog_pb2.HTTPAccessLogEntry()
    assert observation(entry) is None  # no upstream: nothing to say about a provider
    entry.common_properties.upstream_cluster = "mock_hosted"
    entry.common_properties.time_to_first_upstream_rx_byte.nanos = 42_000_000
    entry.common_properties.time_to_last_upstream_rx_byte.seconds = 80  # a long stream
    entry.response.response_code.value = 200
    assert observation(entry) == Observation("mock_hosted", 200, 42.0)
    entry.common_properties.response_flags.downstream_remote_reset = True
    assert observation(entry) is None  # the client left: not the provider's fault
    entry.common_properties.response_flags.upstream_connection_failure = True
    found = observation(entry)
    assert found is not None and found.failed
    assert finished_reservation(entry) is None
    entry.request.request_headers["x-authz-reservation"] = "global.abc"
    entry.request.request_headers["x-authz-reserved-tokens"] = "120"
    assert finished_reservation(entry) == ("global.abc", 120)
