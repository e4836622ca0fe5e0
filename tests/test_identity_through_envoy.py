"""The identity layer end to end: real tokens from the demo IdP, through a real Envoy."""

from __future__ import annotations

import http.client
import json
import ssl
import time

import pytest

from authz_service.devstack.idp import mint_token
from authz_service.devstack.run import DEMO_API_KEY
from authz_service.devstack.stack import Stack
from tests.helpers import Reply, http_request
from tests.test_through_envoy import CHAT, JSON, bearer, edge

pytestmark = pytest.mark.envoy


def token(stack: Stack, **claims: object) -> str:
    return mint_token(stack.idp_dir, issuer=stack.issuer, **claims)  # type: ignore[arg-type]


def test_valid_token_reaches_upstream_with_identity_headers(demo_stack: Stack) -> None:
    alice = token(demo_stack, subject="alice", tier="pro", tenant="acme")
    reply = edge(demo_stack, "GET", "/echo", None, bearer(alice))
    assert reply.status == 200
    seen = reply.json()["headers"]
    assert (seen["x-authz-subject"], seen["x-authz-tenant"], seen["x-authz-tier"]) == (
        "alice",
        "acme",
        "pro",
    )
    # The echo route forwards credentials (forward_credentials: true).
    assert seen["authorization"] == f"Bearer {alice}"


def test_spoofed_identity_headers_never_reach_upstream(demo_stack: Stack) -> None:
    spoofed = {"x-authz-subject": "root", "x-authz-tier": "enterprise", "x-authz-tenant": "x"}
    anonymous = edge(demo_stack, "GET", "/echo", None, spoofed).json()["headers"]
    assert anonymous["x-authz-subject"] == "anonymous"
    assert anonymous["x-authz-tier"] == "anonymous"
    bob = token(demo_stack, subject="bob")
    signed_in = edge(demo_stack, "GET", "/echo", None, {**spoofed, **bearer(bob)})
    assert signed_in.json()["headers"]["x-authz-subject"] == "bob"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"expired": True}, "identity.token_expired"),
        ({"not_before_s": 600}, "identity.token_not_yet_valid"),
        ({"audience": "someone-else"}, "identity.wrong_audience"),
        ({"issuer": "http://127.0.0.1:1"}, "identity.wrong_issuer"),
    ],
)
def test_invalid_tokens_get_401_with_rfc6750_challenge(
    demo_stack: Stack, claims: dict[str, object], reason: str
) -> None:
    if claims.get("issuer"):
        bad = mint_token(demo_stack.idp_dir, **claims)  # type: ignore[arg-type]
    else:
        bad = token(demo_stack, **claims)
    reply = edge(demo_stack, "POST", "/v1/chat/completions", CHAT, bearer(bad))
    assert reply.status == 401
    error = reply.json()["error"]
    assert error["code"] == reason
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="authz-service", error="invalid_token"')
    assert bad not in reply.body.decode() and bad not in challenge


def test_missing_credentials_get_a_bare_challenge(demo_stack: Stack) -> None:
    reply = edge(demo_stack, "POST", "/v1/chat/completions", CHAT, JSON)
    assert reply.status == 401
    assert reply.json()["error"]["code"] == "identity.missing_credentials"
    assert reply.headers["www-authenticate"] == 'Bearer realm="authz-service"'


def test_garbage_and_tampered_tokens_are_refused(demo_stack: Stack) -> None:
    good = token(demo_stack)
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload[:-4]}AAAA.{signature}"
    for bad in ("not-a-token", f"{header}.{payload}.", tampered, "a.b.c.d.e"):
        reply = edge(demo_stack, "POST", "/v1/chat/completions", CHAT, bearer(bad))
        assert reply.status == 401, bad
        assert reply.json()["error"]["code"].startswith("identity.")


def test_api_key_on_the_classifier_route(demo_stack: Stack) -> None:
    wrong = edge(
        demo_stack, "POST", "/v1/classify", '{"image": "x"}', {**JSON, "x-api-key": "ak_wrong"}
    )
    assert (wrong.status, wrong.json()["error"]["code"]) == (401, "identity.invalid_api_key")
    assert (
        'ApiKey realm="authz-service", header="x-api-key"'
        in edge(demo_stack, "POST", "/v1/classify", '{"image": "x"}', JSON).headers[
            "www-authenticate"
        ]
    )
    # A chat route does not accept API keys: the key is no credential there.
    chat = edge(
        demo_stack, "POST", "/v1/chat/completions", CHAT, {**JSON, "x-api-key": DEMO_API_KEY}
    )
    assert chat.status == 401


def test_roles_are_enforced_and_credentials_removed(demo_stack: Stack) -> None:
    user = edge(demo_stack, "GET", "/echo/admin", None, bearer(token(demo_stack, roles=["user"])))
    assert (user.status, user.json()["error"]["code"]) == (403, "identity.insufficient_role")
    admin = edge(demo_stack, "GET", "/echo/admin", None, bearer(token(demo_stack, roles=["admin"])))
    assert admin.status == 200
    # forward_credentials defaults to false: the token stays at the edge.
    assert "authorization" not in admin.json()["headers"]


def test_key_rotation_is_picked_up_without_restart(demo_stack: Stack) -> None:
    rotated = http_request("POST", f"{demo_stack.issuer}/__idp/rotate?keep_old=1")
    new_kid = rotated.json()["kid"]
    fresh = token(demo_stack, kid=new_kid, subject="carol")
    # Refetching on an unknown kid is rate limited (min_refetch_interval_s: 2 in the demo).
    deadline = time.monotonic() + 10
    while (reply := edge(demo_stack, "GET", "/echo", None, bearer(fresh))).status != 200:
        assert reply.json()["error"]["code"] == "identity.unknown_key"
        assert time.monotonic() < deadline, "the rotated key was never picked up"
        time.sleep(0.25)
    assert reply.json()["headers"]["x-authz-subject"] == "carol"


def test_mtls_client_certificate_is_an_identity(demo_stack: Stack) -> None:
    context = ssl.create_default_context(cafile=str(demo_stack.certs_dir / "dev.crt"))
    context.load_cert_chain(
        demo_stack.certs_dir / "client.crt", demo_stack.certs_dir / "client.key"
    )
    connection = http.client.HTTPSConnection(
        "localhost", demo_stack.ports.https, context=context, timeout=10
    )
    try:
        connection.request("GET", "/echo")
        response = connection.getresponse()
        reply = Reply(response.status, dict(response.getheaders()), response.read())
    finally:
        connection.close()
    assert reply.status == 200
    seen = json.loads(reply.body)["headers"]
    assert seen["x-authz-subject"] == "spiffe://demo.local/ns/default/sa/demo-client"
    assert (seen["x-authz-tenant"], seen["x-authz-tier"]) == ("mesh", "pro")
