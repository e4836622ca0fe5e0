"""Declarative rules through the real pipeline: conditions on the principal, route,
headers, query and body fields; when/unless; the first enforcing deny decides; dry-run
logs and counts but allows; policy problems are reported at load."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from authz_service.decision import Decision
from authz_service.envoy_codec import request_view
from authz_service.observability.metrics import Metrics
from authz_service.pipeline import Pipeline
from authz_service.policy import PolicyError, load_policy
from tests.helpers import TIER_KEYS, api_key_identity, check_request, write_policy

FREE, PRO = TIER_KEYS["free"], TIER_KEYS["pro"]

POLICY = f"""
    version: 1
{api_key_identity(roles={"free": ["user"], "pro": ["user", "admin"]})}
    routes:
      - name: chat
        match: {{ path: {{ exact: /v1/chat/completions }}, methods: [POST] }}
        semantics:
          rules:
            - name: model-for-tier
              unless:
                any:
                  - {{ body/model: {{ in: [gpt-4o-mini, llama-3-8b] }} }}
                  - {{ body/model: gpt-4o, principal.tier: pro }}
              message: this model is not available to your tier
            - name: n-cap
              when: {{ body/n: {{ gt: 1 }}, principal.tier: {{ not_in: [pro] }} }}
              status: 422
              message: only one choice per request on this tier
            - name: temperature-cap
              when: {{ body/temperature: {{ gt: 1.2 }} }}
              status: 422
            - name: no-tools-without-admin
              when:
                body/tools: {{ present: true }}
                not: {{ principal.roles: {{ contains: admin }} }}
            - name: stream-forbidden
              when: {{ body/stream: true }}
            - name: user-field-expected
              unless: {{ body/user: {{ present: true }} }}
              mode: dry_run
            - name: beta-header
              when: {{ header.x-beta: {{ matches: "^(on|yes)$" }}, query.debug: "1" }}
              status: 400
            - name: long-system
              when: {{ body/messages/0/content: {{ size_gt: 50 }}, body/messages/0/role: system }}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY)


def ask(
    policy: Path, body: dict[str, Any], key: str = FREE, path: str = "/v1/chat/completions",
    **headers: str,
) -> Decision:  # fmt: skip
    request = check_request(
        "POST",
        path,
        headers={"content-type": "application/json", "x-api-key": key, **headers},
        body=json.dumps(body).encode(),
    )
    return asyncio.run(Pipeline(load_policy(policy)).decide(request_view(request)))


def chat(model: str = "gpt-4o-mini", **extra: object) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "user": "u", **extra}


@pytest.mark.parametrize(
    ("key", "body", "status", "reason"),
    [
        (FREE, chat(), 200, "allowed"),
        (FREE, chat("gpt-4o"), 403, "semantics.rule.model-for-tier"),
        (PRO, chat("gpt-4o"), 200, "allowed"),
        (PRO, chat("claude-3"), 403, "semantics.rule.model-for-tier"),
        (FREE, chat(n=2), 422, "semantics.rule.n-cap"),
        (PRO, chat(n=2), 200, "allowed"),
        (FREE, chat(temperature=1.5), 422, "semantics.rule.temperature-cap"),
        (FREE, chat(temperature=True), 200, "allowed"),  # a boolean is not a number
        (FREE, chat(tools=[]), 403, "semantics.rule.no-tools-without-admin"),
        (PRO, chat(tools=[]), 200, "allowed"),
        (PRO, chat(stream=True), 403, "semantics.rule.stream-forbidden"),
        (PRO, chat(stream=1), 200, "allowed"),  # JSON 1 is not true
        (FREE, {"model": "gpt-4o-mini", "messages": [{"role": "system", "content": "x" * 51}]},
         403, "semantics.rule.long-system"),
    ],
)  # fmt: skip
def test_rules(policy: Path, key: str, body: dict[str, Any], status: int, reason: str) -> None:
    decision = ask(policy, body, key)
    assert (decision.status, decision.reason) == (status, reason), decision.message


def test_the_denial_names_the_rule_and_its_message(policy: Path) -> None:
    decision = ask(policy, chat("gpt-4o"))
    assert decision.layer == "semantics"
    assert decision.message == "rule 'model-for-tier': this model is not available to your tier"
    assert decision.details == {"rule": "model-for-tier"}


def test_the_first_enforcing_rule_decides(policy: Path) -> None:
    decision = ask(policy, chat("gpt-4o", n=3, stream=True))
    assert decision.reason == "semantics.rule.model-for-tier"


def test_headers_and_query_in_conditions(policy: Path) -> None:
    beta = {"x-beta": "on"}
    assert ask(policy, chat(), path="/v1/chat/completions?debug=1", **beta).status == 400
    assert ask(policy, chat(), path="/v1/chat/completions?debug=2", **beta).allowed
    assert ask(policy, chat(), path="/v1/chat/completions?debug=1", **{"x-beta": "off"}).allowed


def test_dry_run_allows_but_says_what_it_would_have_denied(policy: Path) -> None:
    body = chat()
    del body["user"]
    metrics = Metrics()
    request = check_request(
        "POST",
        "/v1/chat/completions",
        headers={"content-type": "application/json", "x-api-key": FREE},
        body=json.dumps(body).encode(),
    )
    pipeline = Pipeline(load_policy(policy), observers=[metrics])
    decision = asyncio.run(pipeline.decide(request_view(request)))
    assert decision.allowed
    assert decision.metadata["would_deny"] == "semantics.rule.user-field-expected"
    assert (
        'authz_dry_run_denials_total{route="chat",reason="semantics.rule.user-field-expected"} 1'
        in metrics.render()
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("{ name: r, when: { body/x: { matches: '(' } } }", "not a valid regex"),
        ("{ name: r, when: { body/x: { gt: 'a' } } }", "gt takes a number"),
        ("{ name: r, when: { body/x: { in: 3 } } }", "in takes a list"),
        ("{ name: r, when: { headers.x: 1 } }", "unknown key 'headers.x'"),
        ("{ name: r, when: { body/x: { near: 1 } } }", "unknown operator 'near'"),
        ("{ name: r, when: { body/x: 1 }, unless: { body/y: 1 } }", "is valid under each of"),
        ("{ name: r }", "is not valid under any of the given schemas"),
    ],
)
def test_bad_rules_are_policy_problems(tmp_path: Path, rule: str, message: str) -> None:
    text = f"""
        version: 1
        routes:
          - name: r
            match: {{ path: {{ prefix: / }} }}
            semantics:
              rules:
                - {rule}
    """
    with pytest.raises(PolicyError) as raised:
        load_policy(write_policy(tmp_path, text))
    assert message in str(raised.value)
    assert "routes[0].semantics.rules[0]" in str(raised.value)


def test_duplicate_rule_names_are_a_problem(tmp_path: Path) -> None:
    text = """
        version: 1
        routes:
          - name: r
            match: { path: { prefix: / } }
            semantics:
              rules:
                - { name: same, when: { method: GET } }
                - { name: same, when: { method: PUT } }
    """
    with pytest.raises(PolicyError, match="rule name 'same' is used twice"):
        load_policy(write_policy(tmp_path, text))
