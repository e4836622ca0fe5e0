"""Situation 1 and the LLM bodies of situation 2, end to end: clients → real Envoy →
real authz-service (demo policy: the classifier's OpenAPI document, image checks, the
built-in chat schema with per-tier limits) → mock upstream."""

from __future__ import annotations

import gzip
import json

import pytest

from authz_service.devstack.idp import mint_token
from authz_service.devstack.run import DEMO_API_KEY
from authz_service.devstack.stack import Stack
from tests.helpers import Reply, http_request
from tests.payloads import JPEG, PNG, Bad, b64, classifier_corpus, gzip_bomb, image_bytes, multipart
from tests.test_through_envoy import JSON, edge, upstream_count

pytestmark = pytest.mark.envoy

CORPUS = classifier_corpus()
IMAGE_AND_TOP_K = multipart([("image", "a.png", "image/png", PNG), ("top_k", None, None, b"2")])
OCTET_STREAM_PART = multipart([("image", "a.jpg", "application/octet-stream", JPEG)])
KEY = {"x-api-key": DEMO_API_KEY}


def send_to_classifier(stack: Stack, bad: Bad, direct: bool = False) -> Reply:
    headers = {"content-type": bad.content_type, **KEY, **bad.headers}
    path = "/v1/classify" + bad.query
    if direct:
        url = f"http://127.0.0.1:{stack.ports.hosted}{path}"
        return http_request("POST", url, bad.body, headers)
    return edge(stack, "POST", path, bad.body, headers)


@pytest.mark.parametrize("bad", CORPUS, ids=[bad.name for bad in CORPUS])
def test_no_malformed_payload_reaches_the_classifier(demo_stack: Stack, bad: Bad) -> None:
    before = upstream_count(demo_stack, "/v1/classify")
    reply = send_to_classifier(demo_stack, bad)
    assert reply.status == bad.status, reply.body
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert error["code"] == bad.reason
    assert error["message"] and error["decision_id"] == reply.headers["x-authz-decision-id"]
    assert upstream_count(demo_stack, "/v1/classify") == before


def test_the_same_corpus_sent_directly_crashes_the_classifier(demo_stack: Stack) -> None:
    """What the layer prevents: the fragile classifier answers 500 to most of the corpus
    and happily accepts the rest (a 50,000 x 50,000 PNG, an animated GIF, a JPEG that
    says it is a PNG) that would hurt it later."""
    outcomes = {bad.name: send_to_classifier(demo_stack, bad, direct=True).status for bad in CORPUS}
    expected = {bad.name: 500 if bad.crashes_classifier else 200 for bad in CORPUS}
    assert outcomes == expected
    assert sum(status == 500 for status in outcomes.values()) >= 18


def classify_both_ways(stack: Stack, content_type: str, body: bytes) -> tuple[Reply, Reply]:
    headers = {"content-type": content_type, **KEY}
    direct = http_request(
        "POST", f"http://127.0.0.1:{stack.ports.hosted}/v1/classify", body, headers
    )
    return edge(stack, "POST", "/v1/classify", body, headers), direct


@pytest.mark.parametrize(
    ("name", "content_type", "body"),
    [
        ("raw PNG", "image/png", PNG),
        ("raw JPEG", "image/jpeg", JPEG),
        ("raw WebP", "image/webp", image_bytes("WEBP")),
        ("base64 JSON", "application/json", json.dumps({"image": b64(JPEG), "top_k": 3}).encode()),
        ("multipart", *IMAGE_AND_TOP_K),
        ("multipart, octet-stream part", *OCTET_STREAM_PART),
    ],
)  # fmt: skip
def test_valid_images_pass_unchanged(
    demo_stack: Stack, name: str, content_type: str, body: bytes
) -> None:
    through_envoy, direct = classify_both_ways(demo_stack, content_type, body)
    assert through_envoy.status == 200, through_envoy.body
    # The mock's scores depend only on the image bytes: same scores, same bytes.
    assert through_envoy.json()["predictions"] == direct.json()["predictions"]


def chat(content: str = "Hello", **extra: object) -> bytes:
    messages = [{"role": "user", "content": content}]
    return json.dumps({"model": "gpt-4o-mini", "messages": messages, **extra}).encode()


def as_tier(stack: Stack, tier: str) -> dict[str, str]:
    token = mint_token(stack.idp_dir, issuer=stack.issuer, subject=f"{tier}-user", tier=tier)
    return {**JSON, "authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    ("tier", "body", "status", "reason"),
    [
        ("pro", chat(max_tokens=4000), 200, None),
        ("pro", json.dumps({"model": "gpt-4o-mini", "messages": []}).encode(), 422,
         "syntax.schema_violation"),
        ("pro", chat(frobnicate=1), 422, "syntax.schema_violation"),
        ("free", chat(max_tokens=2000), 422, "syntax.max_tokens_too_high"),
        ("free", chat("x" * 9000), 413, "syntax.prompt_too_long"),
        ("trial", chat(top_p=0.5), 422, "syntax.parameter_not_allowed"),
        ("trial", chat(max_tokens=100), 200, None),
    ],
)  # fmt: skip
def test_chat_bodies_per_tier(
    demo_stack: Stack, tier: str, body: bytes, status: int, reason: str | None
) -> None:
    before = upstream_count(demo_stack, "/v1/chat/completions")
    reply = edge(demo_stack, "POST", "/v1/chat/completions", body, as_tier(demo_stack, tier))
    assert reply.status == status, reply.body
    if reason is None:
        assert reply.json()["usage"]["prompt_tokens"] > 0
        return
    assert reply.json()["error"]["code"] == reason
    assert upstream_count(demo_stack, "/v1/chat/completions") == before


def test_violations_name_the_field(demo_stack: Stack) -> None:
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": 1}]})
    reply = edge(demo_stack, "POST", "/v1/chat/completions", body, as_tier(demo_stack, "pro"))
    error = reply.json()["error"]
    pointers = {violation["pointer"] for violation in error["details"]["violations"]}
    assert "/messages/0/role" in pointers
    assert error["message"].startswith("the request body does not match its schema")


def test_gzip_chat_is_checked_decoded_and_a_bomb_is_stopped(demo_stack: Stack) -> None:
    headers = {**as_tier(demo_stack, "pro"), "content-encoding": "gzip"}
    packed = gzip.compress(chat("Hello from a compressed body"))
    reply = edge(demo_stack, "POST", "/v1/chat/completions", packed, headers)
    assert reply.status == 200, reply.body
    assert "28 characters" in reply.json()["choices"][0]["message"]["content"]
    before = upstream_count(demo_stack, "/v1/chat/completions")
    bomb = gzip_bomb(50_000_000)
    assert len(bomb) < 100_000
    reply = edge(demo_stack, "POST", "/v1/chat/completions", bomb, headers)
    assert (reply.status, reply.json()["error"]["code"]) == (413, "protocol.decoded_body_too_large")
    assert upstream_count(demo_stack, "/v1/chat/completions") == before
