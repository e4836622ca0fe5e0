"""The identity layer through the real pipeline: real signed tokens, real policies on disk,
and the Decision a client (and the upstream) would see.

Attacks on JWT verification are in ``test_jwt_attacks.py``; they share the keys, the
policy and the helpers defined here.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import random
import re
import string
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz_service.decision import Decision
from authz_service.devstack import mock_upstream
from authz_service.devstack.idp import mint_token
from authz_service.envoy_codec import request_view
from authz_service.layers.identity.api_keys import hash_key
from authz_service.pipeline import Pipeline
from authz_service.policy import PolicyError, load_policy
from tests.helpers import check_request, http_request, write_policy

# --- keys ----------------------------------------------------------------------------------

ISSUER = "https://issuer.test"
HMAC_ISSUER = "https://hmac.test"
TYPED_ISSUER = "https://typed.test"
RS_ONLY_ISSUER = "https://rs-only.test"
AUDIENCE = "api://authz"
SECRET_ENV = "AUTHZ_TEST_HMAC_SECRET"
HMAC_SECRET = "s3cr3t-" + "x" * 57  # 64 bytes: long enough for HS512 too (RFC 7518 §3.2)
TIER_CLAIM = "https://example.com/tier"

RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC_ALGORITHMS = ("ES256", "ES384", "ES512")
ASYMMETRIC_ALGORITHMS = (*RSA_ALGORITHMS, *EC_ALGORITHMS, "EdDSA")
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_CURVES: dict[str, ec.EllipticCurve] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}

API_KEY_2024 = "ak_partner-a-2024-" + "k" * 32
API_KEY_2025 = "ak_partner-a-2025-" + "q" * 32

DEMO_CLIENT = "spiffe://demo.local/ns/default/sa/demo-client"


@functools.cache
def signing_key(alg: str, owner: str = "issuer") -> Any:
    """The private key that signs ``alg`` tokens; ``owner="attacker"`` for a stranger's key.

    One RSA key serves the six RSA algorithms (published under six kids)."""
    if alg in RSA_ALGORITHMS:
        return _rsa_key(owner)
    if alg in _CURVES:
        return ec.generate_private_key(_CURVES[alg])
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(alg)


@functools.cache
def _rsa_key(owner: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def kid_of(alg: str) -> str:
    return f"{alg.lower()}-1"


def public_jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    public = private_key.public_key()
    jwk: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def jwks_document() -> dict[str, Any]:
    """Every asymmetric algorithm's public key, each under its own kid and pinned alg."""
    return {
        "keys": [public_jwk(signing_key(alg), kid_of(alg), alg) for alg in ASYMMETRIC_ALGORITHMS]
    }


# --- tokens --------------------------------------------------------------------------------


def claims(**overrides: Any) -> dict[str, Any]:
    """Valid claims for the ``main`` provider; an override of None removes the claim."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "iat": now,
        "exp": now + 600,
        "jti": "token-7",
        TIER_CLAIM: "pro",
        "org": {"id": "org-7"},
        "roles": ["user", "owner"],
        "scope": "chat:read models:list",
    }
    base.update(overrides)
    return {name: value for name, value in base.items() if value is not None}


def sign(
    payload: dict[str, Any],
    alg: str = "RS256",
    *,
    key: Any = None,
    kid: str | None = "",
    headers: dict[str, Any] | None = None,
) -> str:
    """A token signed by pyjwt. ``kid=""`` means the algorithm's own kid; None leaves it out."""
    if key is None:
        key = HMAC_SECRET.encode() if alg in HMAC_ALGORITHMS else signing_key(alg)
    header: dict[str, Any] = {}
    if kid is not None and alg not in HMAC_ALGORITHMS:
        header["kid"] = kid or kid_of(alg)
    header.update(headers or {})
    return jwt.encode(payload, key, algorithm=alg, headers=header)


def token(alg: str = "RS256", /, **overrides: Any) -> str:
    issuer = HMAC_ISSUER if alg in HMAC_ALGORITHMS else ISSUER
    return sign(claims(**{"iss": issuer, **overrides}), alg)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def json_segment(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def forge(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"\x01" * 32) -> str:
    """A token put together by hand, with whatever header and signature bytes."""
    return f"{json_segment(header)}.{json_segment(payload)}.{b64url(signature)}"


# --- requests and decisions ----------------------------------------------------------------


def bearer(jwt_token: str, path: str = "/v1/models", **headers: str) -> CheckRequest:
    return check_request("GET", path, headers={"authorization": f"Bearer {jwt_token}", **headers})


def with_peer(request: CheckRequest, principal: str) -> CheckRequest:
    request.attributes.source.principal = principal
    return request


async def decide_all_async(policy_file: Path, requests: Sequence[CheckRequest]) -> list[Decision]:
    pipeline = Pipeline(load_policy(policy_file))
    await pipeline.start()
    try:
        return [await pipeline.decide(request_view(request)) for request in requests]
    finally:
        await pipeline.stop()


def decide_all(policy_file: Path, *requests: CheckRequest) -> list[Decision]:
    return asyncio.run(decide_all_async(policy_file, requests))


def decide(policy_file: Path, request: CheckRequest) -> Decision:
    return decide_all(policy_file, request)[0]


_RFC6750_TEXT = re.compile(r"^[\x20\x21\x23-\x5b\x5d-\x7e]*$")
"""RFC 6750 §3: what error and error_description values may contain."""


def challenge_attributes(challenge: str) -> dict[str, str]:
    assert challenge.startswith("Bearer "), challenge
    return dict(re.findall(r'(\w+)="([^"]*)"', challenge))


def assert_refused(decision: Decision, reason: str, *secrets: str) -> None:
    """401 with ``identity.<reason>`` and an RFC 6750 invalid_token challenge that gives
    away none of ``secrets`` (the token, its signature, key material)."""
    assert (decision.allowed, decision.status, decision.reason) == (
        False,
        401,
        f"identity.{reason}",
    ), decision.message
    assert decision.layer == "identity"
    challenge = decision.headers["www-authenticate"]
    attributes = challenge_attributes(challenge)
    assert attributes["realm"] == "authz-service"
    assert attributes["error"] == "invalid_token"
    assert attributes["error_description"]
    for secret in secrets:
        for part in (secret, *(piece for piece in secret.split(".") if len(piece) > 16)):
            assert part not in challenge
            assert part not in decision.message
            assert part not in json.dumps(decision.error_body())
    assert "BEGIN" not in challenge and "PRIVATE" not in challenge
    assert not {"subject", "auth_method", "credential_id"} & decision.metadata.keys()


def principal_of(decision: Decision) -> dict[str, Any]:
    """The principal an allowed decision hands on in its (flat) dynamic metadata, as Envoy's
    access log reads it, in one comparable form (roles and scopes as sorted lists)."""
    assert decision.allowed, (decision.status, decision.reason, decision.message)
    metadata = decision.metadata
    return {
        "subject": metadata["subject"],
        "tenant": metadata["tenant"],
        "tier": metadata["tier"],
        "roles": sorted(filter(None, metadata["roles"].split(","))),
        "scopes": sorted(metadata["scopes"].split()),
        "method": metadata["auth_method"],
        "provider": metadata["auth_provider"],
        "credential_id": metadata["credential_id"],
    }


# --- the policy ----------------------------------------------------------------------------

POLICY = string.Template("""
    version: 1
    identity:
      jwt:
        - name: main
          issuer: https://issuer.test
          audiences: [api://authz, api://authz-admin]
          algorithms: [RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA]
          keys: { jwks_file: jwks.json }
          max_token_bytes: 16384
          claims:
            tier: https://example.com/tier
            tenant: { claim: org.id, default: acme }
        - name: typed
          issuer: https://typed.test
          audiences: [api://authz]
          algorithms: [ES256]
          keys: { jwks_file: jwks.json }
          typ: JWT
        - name: rs-only
          issuer: https://rs-only.test
          audiences: [api://authz]
          algorithms: [RS256]
          keys: { jwks_file: jwks.json }
        - name: shared
          issuer: https://hmac.test
          audiences: [api://authz]
          algorithms: [HS256, HS384, HS512]
          keys: { secret_env: AUTHZ_TEST_HMAC_SECRET }
      api_keys:
        - name: partners
          principals:
            - subject: partner-a
              tenant: partner-a
              tier: enterprise
              roles: [partner]
              scopes: [chat:write]
              keys:
                - { id: pa-2024, hash: "$hash_2024" }
                - { id: pa-2025, hash: "$hash_2025" }
      mtls:
        - name: workloads
          principals:
            - san: spiffe://demo.local/ns/default/sa/demo-client
              tenant: demo
              tier: internal
              roles: [service]
            - { san: "spiffe://demo.local/ns/batch/*", tenant: batch, tier: bulk }
    routes:
      - name: public
        match: { path: { prefix: /public } }
        identity: { anonymous: true, anonymous_tier: guest }
      - name: scoped
        match: { path: { prefix: /scoped } }
        identity: { require_scopes: [chat:write] }
      - name: admin
        match: { path: { prefix: /admin } }
        identity: { require_roles: [admin, operator] }
      - name: forward
        match: { path: { prefix: /forward } }
        identity: { forward_credentials: true }
      - name: internal
        match: { path: { prefix: /internal } }
        identity: { providers: [workloads], require_mtls: true }
      - name: jwt-only
        match: { path: { prefix: /jwt-only } }
        identity: { providers: [main] }
      - name: hmac-only
        match: { path: { prefix: /hmac-only } }
        identity: { providers: [shared] }
      - name: api
        match: { path: { prefix: / } }
""")


def write_jwks(directory: Path, document: dict[str, Any], name: str = "jwks.json") -> Path:
    file = directory / name
    file.write_text(json.dumps(document), encoding="utf-8")
    return file


def make_policy(directory: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """:data:`POLICY` with its JWKS file, and the HMAC secret in the environment."""
    monkeypatch.setenv(SECRET_ENV, HMAC_SECRET)
    write_jwks(directory, jwks_document())
    text = POLICY.substitute(hash_2024=hash_key(API_KEY_2024), hash_2025=hash_key(API_KEY_2025))
    return write_policy(directory, text)


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_policy(tmp_path, monkeypatch)


# --- 1. every supported algorithm ----------------------------------------------------------


@pytest.mark.parametrize("alg", [*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS])
def test_valid_token_in_every_supported_algorithm_is_allowed(policy: Path, alg: str) -> None:
    decision = decide(policy, bearer(token(alg)))

    assert (decision.allowed, decision.status, decision.reason) == (True, 200, "allowed")
    principal = principal_of(decision)
    assert principal["subject"] == "alice"
    assert principal["method"] == "jwt"
    assert principal["provider"] == ("shared" if alg in HMAC_ALGORITHMS else "main")
    assert decision.headers["x-authz-subject"] == "alice"


def test_a_key_without_alg_verifies_every_algorithm_of_its_family(
    tmp_path: Path, policy: Path
) -> None:
    jwk = public_jwk(signing_key("RS256"), "rsa-any", "RS256")
    del jwk["alg"]
    write_jwks(tmp_path, {"keys": [jwk]})

    decisions = decide_all(
        policy, *(bearer(sign(claims(), alg, kid="rsa-any")) for alg in RSA_ALGORITHMS)
    )

    assert [d.reason for d in decisions] == ["allowed"] * len(RSA_ALGORITHMS)


# --- 3. RFC 6750 ---------------------------------------------------------------------------


def test_missing_credentials_get_a_bearer_challenge_without_error(policy: Path) -> None:
    jwt_only, anywhere = decide_all(
        policy, check_request("GET", "/jwt-only/x"), check_request("GET", "/v1/models")
    )

    assert (jwt_only.status, jwt_only.reason) == (401, "identity.missing_credentials")
    assert jwt_only.headers["www-authenticate"] == 'Bearer realm="authz-service"'
    # A route that also takes API keys says so, still without an error attribute.
    assert (anywhere.status, anywhere.reason) == (401, "identity.missing_credentials")
    challenge = anywhere.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="authz-service"')
    assert 'ApiKey realm="authz-service", header="x-api-key"' in challenge
    assert "error=" not in challenge


def test_a_header_without_the_bearer_scheme_is_no_credential(policy: Path) -> None:
    decision = decide(
        policy, check_request("GET", "/jwt-only/x", headers={"authorization": "Basic YTpi"})
    )
    assert (decision.status, decision.reason) == (401, "identity.missing_credentials")


def test_an_invalid_token_gets_invalid_token_without_token_or_key_material(policy: Path) -> None:
    forged = sign(claims(), "RS256", key=signing_key("RS256", "attacker"))
    decision = decide(policy, bearer(forged))

    assert_refused(decision, "bad_signature", forged, forged.split(".")[2])
    attributes = challenge_attributes(decision.headers["www-authenticate"])
    assert _RFC6750_TEXT.match(attributes["error_description"])
    public_n = RSAAlgorithm.to_jwk(signing_key("RS256").public_key(), as_dict=True)["n"]
    assert public_n[:32] not in decision.headers["www-authenticate"]


def test_missing_scope_is_403_insufficient_scope(policy: Path) -> None:
    refused, allowed = decide_all(
        policy,
        bearer(token(scope="chat:read"), "/scoped/x"),
        bearer(token(scope="chat:read chat:write"), "/scoped/x"),
    )

    assert (refused.status, refused.reason) == (403, "identity.insufficient_scope")
    attributes = challenge_attributes(refused.headers["www-authenticate"])
    assert attributes["realm"] == "authz-service"
    assert attributes["error"] == "insufficient_scope"
    assert attributes["scope"] == "chat:write"
    assert allowed.allowed


def test_missing_role_is_403_insufficient_role(policy: Path) -> None:
    refused, allowed = decide_all(
        policy,
        bearer(token(roles=["user"]), "/admin/x"),
        bearer(token(roles=["user", "operator"]), "/admin/x"),
    )

    assert (refused.status, refused.reason) == (403, "identity.insufficient_role")
    assert allowed.allowed


def test_anonymous_route_allows_no_credentials_with_the_anonymous_tier(policy: Path) -> None:
    nobody, somebody, forged = decide_all(
        policy,
        check_request("GET", "/public/docs"),
        bearer(token(), "/public/docs"),
        bearer(token(exp=int(time.time()) - 3600), "/public/docs"),
    )

    assert nobody.allowed
    assert nobody.headers["x-authz-tier"] == "guest"
    assert nobody.headers["x-authz-subject"] == "anonymous"
    assert principal_of(nobody)["method"] == "anonymous"
    # Credentials on an anonymous route still count: valid ones identify, bad ones refuse.
    assert principal_of(somebody)["subject"] == "alice"
    assert somebody.headers["x-authz-tier"] == "pro"
    assert_refused(forged, "token_expired")


# --- 4. claims → principal -----------------------------------------------------------------


def test_claims_become_the_principal_and_upstream_identity_headers(policy: Path) -> None:
    jwt_token = token(
        "ES256", roles=["user", "owner"], scope="chat:read  models:list", jti="token-42"
    )
    decision = decide(policy, bearer(jwt_token, **{"x-authz-tier": "enterprise"}))

    assert principal_of(decision) == {
        "subject": "alice",
        "tenant": "org-7",  # the dotted path org.id
        "tier": "pro",  # the claim named https://example.com/tier
        "roles": ["owner", "user"],  # an array claim
        "scopes": ["chat:read", "models:list"],  # a space-separated string claim
        "method": "jwt",
        "provider": "main",
        "credential_id": "token-42",
    }
    assert decision.headers["x-authz-subject"] == "alice"
    assert decision.headers["x-authz-tenant"] == "org-7"
    assert decision.headers["x-authz-tier"] == "pro"  # the client's own x-authz-tier is gone
    metadata = json.dumps(decision.metadata)
    assert jwt_token not in metadata
    assert jwt_token.split(".")[2] not in metadata


def test_claim_defaults_apply_when_claims_are_absent(policy: Path) -> None:
    decision = decide(
        policy, bearer(token(**{TIER_CLAIM: None, "org": None, "roles": None, "scope": None}))
    )

    principal = principal_of(decision)
    assert (principal["tenant"], principal["tier"]) == ("acme", "free")
    assert (principal["roles"], principal["scopes"]) == ([], [])
    assert (decision.headers["x-authz-tenant"], decision.headers["x-authz-tier"]) == (
        "acme",
        "free",
    )


def test_a_token_without_subject_is_refused(policy: Path) -> None:
    assert_refused(decide(policy, bearer(token(sub=None))), "missing_claim")


def test_credentials_are_removed_unless_the_route_forwards_them(policy: Path) -> None:
    jwt_token = token()
    default, forwarded, api_key = decide_all(
        policy,
        bearer(jwt_token, "/v1/models"),
        bearer(jwt_token, "/forward/x"),
        check_request("GET", "/v1/models", headers={"x-api-key": API_KEY_2024}),
    )

    assert default.allowed and forwarded.allowed and api_key.allowed
    assert "authorization" in default.headers_to_remove
    assert "authorization" not in forwarded.headers_to_remove
    assert "x-api-key" in api_key.headers_to_remove


def test_custom_identity_header_names(tmp_path: Path, policy: Path) -> None:
    headers = "  headers: { subject: x-user, tenant: x-org, tier: x-plan }\n"
    text = policy.read_text().replace("\n  api_keys:", "\n" + headers + "  api_keys:")
    assert headers in text
    custom = write_policy(tmp_path, text, "custom.yaml")

    decision = decide(custom, bearer(token()))

    assert (decision.headers["x-user"], decision.headers["x-org"]) == ("alice", "org-7")
    assert decision.headers["x-plan"] == "pro"
    assert "x-authz-subject" not in decision.headers


# --- 5. API keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "key_id"), [(API_KEY_2024, "pa-2024"), (API_KEY_2025, "pa-2025")])
def test_api_key_gives_its_owners_principal(policy: Path, key: str, key_id: str) -> None:
    decision = decide(policy, check_request("GET", "/v1/models", headers={"x-api-key": key}))

    assert principal_of(decision) == {
        "subject": "partner-a",
        "tenant": "partner-a",
        "tier": "enterprise",
        "roles": ["partner"],
        "scopes": ["chat:write"],
        "method": "api_key",
        "provider": "partners",
        "credential_id": key_id,
    }
    assert decision.headers["x-authz-tier"] == "enterprise"
    assert key not in json.dumps(decision.metadata)
    assert key not in json.dumps(dict(decision.headers))


def test_api_key_owner_scopes_count_for_routes(policy: Path) -> None:
    decision = decide(
        policy, check_request("GET", "/scoped/x", headers={"x-api-key": API_KEY_2024})
    )
    assert decision.allowed


@pytest.mark.parametrize("key", ["ak_wrong", API_KEY_2024 + "x", API_KEY_2024.upper(), " "])
def test_wrong_api_key_is_401(policy: Path, key: str) -> None:
    decision = decide(policy, check_request("GET", "/v1/models", headers={"x-api-key": key}))

    assert (decision.status, decision.reason) == (401, "identity.invalid_api_key")
    assert "www-authenticate" in decision.headers
    assert API_KEY_2024 not in decision.message


def test_api_key_hash_cli_output_is_what_the_policy_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "ak_" + "".join(random.choices(string.ascii_letters + string.digits, k=40))
    result = subprocess.run(
        [sys.executable, "-m", "authz_service", "api-key", "hash"],
        input=key + "\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    stored = result.stdout.strip()
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", stored)
    assert key not in result.stdout

    monkeypatch.setenv(SECRET_ENV, HMAC_SECRET)
    write_jwks(tmp_path, jwks_document())
    file = write_policy(tmp_path, POLICY.substitute(hash_2024=stored, hash_2025=hash_key("other")))

    decision = decide(file, check_request("GET", "/v1/models", headers={"x-api-key": key}))
    assert principal_of(decision)["credential_id"] == "pa-2024"


@pytest.mark.parametrize(
    "bad_hash",
    ["sha256:zz" + "0" * 62, "sha256:" + "a" * 63, "md5:" + "a" * 32, hash_key("k")[:-2], ""],
)
def test_malformed_key_hash_fails_load_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad_hash: str
) -> None:
    monkeypatch.setenv(SECRET_ENV, HMAC_SECRET)
    write_jwks(tmp_path, jwks_document())
    file = write_policy(
        tmp_path, POLICY.substitute(hash_2024=hash_key(API_KEY_2024), hash_2025=bad_hash)
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(file)

    paths = [problem.path for problem in caught.value.problems]
    assert paths == [("identity", "api_keys", 0, "principals", 0, "keys", 1, "hash")]
    assert caught.value.problems[0].line is not None
    assert "identity.api_keys[0].principals[0].keys[1].hash" in str(caught.value)


# --- 6. mTLS -------------------------------------------------------------------------------


def test_mtls_peer_principal_by_exact_san(policy: Path) -> None:
    decision = decide(policy, with_peer(check_request("GET", "/internal/jobs"), DEMO_CLIENT))

    assert principal_of(decision) == {
        "subject": DEMO_CLIENT,
        "tenant": "demo",
        "tier": "internal",
        "roles": ["service"],
        "scopes": [],
        "method": "mtls",
        "provider": "workloads",
        "credential_id": DEMO_CLIENT,
    }
    assert decision.headers["x-authz-subject"] == DEMO_CLIENT


def test_mtls_peer_principal_by_prefix(policy: Path) -> None:
    worker = "spiffe://demo.local/ns/batch/sa/worker"
    decision = decide(policy, with_peer(check_request("GET", "/v1/models"), worker))

    assert principal_of(decision)["subject"] == worker
    assert (decision.headers["x-authz-tenant"], decision.headers["x-authz-tier"]) == (
        "batch",
        "bulk",
    )


@pytest.mark.parametrize(
    "san",
    [
        "spiffe://demo.local/ns/default/sa/demo-client2",
        "spiffe://demo.local/ns/batch-evil/sa/worker",
        "spiffe://demo.local/ns/batch",
        "spiffe://evil.local/ns/default/sa/demo-client",
    ],
)
def test_unknown_client_certificate_is_401(policy: Path, san: str) -> None:
    decision = decide(policy, with_peer(check_request("GET", "/internal/jobs"), san))
    assert (decision.status, decision.reason) == (401, "identity.unknown_client_certificate")


def test_require_mtls_without_a_peer_certificate_is_401(policy: Path) -> None:
    no_peer, token_no_peer = decide_all(
        policy, check_request("GET", "/internal/jobs"), bearer(token(), "/internal/jobs")
    )
    assert (no_peer.status, no_peer.reason) == (401, "identity.mtls_required")
    assert (token_no_peer.status, token_no_peer.reason) == (401, "identity.mtls_required")


# --- 8. the verification cache -------------------------------------------------------------


def test_a_cached_token_is_still_refused_where_its_provider_is_not_accepted(policy: Path) -> None:
    jwt_token = token()
    first, again, elsewhere, back = decide_all(
        policy,
        bearer(jwt_token, "/v1/models"),
        bearer(jwt_token, "/v1/models"),
        bearer(jwt_token, "/hmac-only/x"),
        bearer(jwt_token, "/jwt-only/x"),
    )

    assert principal_of(first) == principal_of(again)
    assert_refused(elsewhere, "wrong_issuer", jwt_token)
    assert principal_of(back) == principal_of(first)


def test_a_cached_token_still_meets_each_routes_requirements(policy: Path) -> None:
    jwt_token = token(scope="chat:read")
    first, scoped, internal = decide_all(
        policy,
        bearer(jwt_token, "/v1/models"),
        bearer(jwt_token, "/scoped/x"),
        bearer(jwt_token, "/internal/x"),
    )
    assert first.allowed
    assert scoped.reason == "identity.insufficient_scope"
    assert internal.reason == "identity.mtls_required"


# --- 9. policy validation ------------------------------------------------------------------

BROKEN = """\
version: 1
identity:
  jwt:
    - name: no-secret
      issuer: https://a.test
      audiences: [x]
      algorithms: [HS256]
      keys: { jwks_file: jwks.json }
    - name: short-secret
      issuer: https://b.test
      audiences: [x]
      algorithms: [HS384]
      keys: { secret_env: AUTHZ_TEST_SHORT_SECRET }
    - name: mixed
      issuer: https://c.test
      audiences: [x]
      algorithms: [HS256, RS256]
      keys: { secret_env: AUTHZ_TEST_HMAC_SECRET }
    - name: no-secret
      issuer: https://d.test
      audiences: [x]
      algorithms: [RS256]
      keys: { jwks_file: missing.json }
routes:
  - name: api
    match: { path: { prefix: / } }
    identity: { providers: [no-secret, nobody] }
"""


def test_identity_policy_problems_are_reported_all_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SECRET_ENV, HMAC_SECRET)
    monkeypatch.setenv("AUTHZ_TEST_SHORT_SECRET", "x" * 31)
    write_jwks(tmp_path, jwks_document())
    file = write_policy(tmp_path, BROKEN)

    with pytest.raises(PolicyError) as caught:
        load_policy(file)

    found = {(problem.line, problem.path) for problem in caught.value.problems}
    assert found == {
        (8, ("identity", "jwt", 0, "keys")),
        (13, ("identity", "jwt", 1, "keys", "secret_env")),
        (17, ("identity", "jwt", 2, "algorithms")),
        (19, ("identity", "jwt", 3, "name")),
        (23, ("identity", "jwt", 3, "keys", "jwks_file")),
        (27, ("routes", 0, "identity", "providers", 1)),
    }
    text = str(caught.value)
    assert "need keys.secret_env" in text
    assert "AUTHZ_TEST_SHORT_SECRET must hold at least 48 bytes for HS384" in text
    assert "x" * 31 not in text  # the secret itself is never printed
    assert "HMAC and public-key algorithms cannot share a provider" in text
    assert "provider name 'no-secret' is used twice" in text
    assert "missing.json" in text
    assert "no identity provider is named 'nobody'" in text


def test_unset_secret_env_is_a_policy_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)
    write_jwks(tmp_path, jwks_document())
    file = write_policy(
        tmp_path, POLICY.substitute(hash_2024=hash_key("a"), hash_2025=hash_key("b"))
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(file)

    assert [problem.path for problem in caught.value.problems] == [
        ("identity", "jwt", 3, "keys", "secret_env")
    ]
    assert "unset" in str(caught.value)


@pytest.mark.parametrize(("alg", "length"), [("HS384", 47), ("HS512", 63)])
def test_hmac_secret_shorter_than_the_hash_output_is_a_policy_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, alg: str, length: int
) -> None:
    """RFC 7518 §3.2: the key is at least as long as the hash output (48 bytes for HS384,
    64 for HS512); pyjwt warns about shorter ones on every verification."""
    monkeypatch.setenv("AUTHZ_TEST_HMAC_LENGTH", "s" * length)
    file = write_policy(
        tmp_path,
        f"""
        version: 1
        identity:
          jwt:
            - {{ name: shared, issuer: "https://hmac.test", audiences: [x], algorithms: [{alg}],
                keys: {{ secret_env: AUTHZ_TEST_HMAC_LENGTH }} }}
        routes:
          - name: api
            match: {{ path: {{ prefix: / }} }}
        """,
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(file)

    assert [problem.path for problem in caught.value.problems] == [
        ("identity", "jwt", 0, "keys", "secret_env")
    ]


def test_two_providers_for_one_issuer_are_not_silently_shadowed(tmp_path: Path) -> None:
    """One issuer, two audiences (two apps of one IdP): either the policy is refused, or
    a token for the second provider is accepted, never refused for the first's audience."""
    write_jwks(tmp_path, jwks_document())
    file = write_policy(
        tmp_path,
        """
        version: 1
        identity:
          jwt:
            - { name: app-a, issuer: "https://issuer.test", audiences: [app-a],
                algorithms: [RS256], keys: { jwks_file: jwks.json } }
            - { name: app-b, issuer: "https://issuer.test", audiences: [app-b],
                algorithms: [RS256], keys: { jwks_file: jwks.json } }
        routes:
          - name: api
            match: { path: { prefix: / } }
        """,
    )
    try:
        load_policy(file)
    except PolicyError as refused:
        assert "issuer" in str(refused)
        return

    app_a, app_b = decide_all(file, bearer(token(aud="app-a")), bearer(token(aud="app-b")))

    assert principal_of(app_a)["provider"] == "app-a"
    assert principal_of(app_b)["provider"] == "app-b"


# --- 7. keys over HTTP from the mock identity provider -------------------------------------

IDP_POLICY = string.Template("""
    version: 1
    identity:
      jwt:
        - name: demo-idp
          issuer: "$issuer"
          audiences: [authz-demo]
          algorithms: [RS256, ES256]
          keys: { oidc_discovery: true }
          min_refetch_interval_s: $min_refetch
          fetch_timeout_s: 1
          required_at_start: true
          claims: { tier: "https://authz.demo/tier", tenant: "https://authz.demo/tenant" }
    routes:
      - name: api
        match: { path: { prefix: / } }
""")

JWKS_PATH = "/.well-known/jwks.json"


class Idp:
    def __init__(self, upstreams: mock_upstream.MockUpstreams, keys: Path) -> None:
        self.upstreams = upstreams
        self.keys = keys
        self.issuer = upstreams.url("idp")

    def control(self, path: str) -> Any:
        reply = http_request("POST", self.issuer + path)
        assert reply.status == 200, reply.body
        return reply.json()

    def jwks_fetches(self) -> int:
        stats = http_request("GET", self.issuer + "/__stats").json()
        count: int = stats["requests"].get(JWKS_PATH, 0)
        return count

    def mint(self, **options: Any) -> str:
        return mint_token(self.keys, issuer=self.issuer, **options)

    def policy(self, directory: Path, min_refetch: float = 0.01) -> Path:
        text = IDP_POLICY.substitute(issuer=self.issuer, min_refetch=min_refetch)
        return write_policy(directory, text, "idp-policy.yaml")


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[Idp]:
    keys = tmp_path / "idp"
    with mock_upstream.start([("idp", "127.0.0.1", 0)], idp_keys=keys) as upstreams:
        yield Idp(upstreams, keys)


def test_rotation_at_the_idp_is_picked_up_without_restart(idp: Idp, tmp_path: Path) -> None:
    async def scenario() -> tuple[Decision, Decision, Decision, str, str]:
        pipeline = Pipeline(load_policy(idp.policy(tmp_path)))
        await pipeline.start()
        try:
            old_token = idp.mint(subject="before", tier="pro", tenant="t1")
            before = await pipeline.decide(request_view(bearer(old_token)))
            new_kid = idp.control("/__idp/rotate")["kid"]
            new_token = idp.mint(subject="after")
            after = await pipeline.decide(request_view(bearer(new_token)))
            old_again = await pipeline.decide(request_view(bearer(idp.mint(subject="old"))))
            return before, after, old_again, new_kid, new_token
        finally:
            await pipeline.stop()

    before, after, old_again, new_kid, new_token = asyncio.run(scenario())

    assert principal_of(before)["subject"] == "before"
    assert (before.headers["x-authz-tier"], before.headers["x-authz-tenant"]) == ("pro", "t1")
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    assert principal_of(after)["subject"] == "after"
    assert old_again.allowed
    assert idp.jwks_fetches() == 2  # at start, and once for the new kid


def test_a_flood_of_unknown_kids_costs_at_most_a_couple_of_fetches(
    idp: Idp, tmp_path: Path
) -> None:
    attacker = signing_key("ES256", "attacker")
    now = int(time.time())
    payload = {"iss": idp.issuer, "aud": "authz-demo", "sub": "x", "iat": now, "exp": now + 60}
    flood = [
        bearer(sign(payload, "ES256", key=attacker, kid=f"kid-{random.getrandbits(64):x}"))
        for _ in range(200)
    ]

    async def scenario() -> tuple[list[Decision], list[Decision]]:
        pipeline = Pipeline(load_policy(idp.policy(tmp_path, min_refetch=0.5)))
        await pipeline.start()
        try:
            await asyncio.sleep(0.55)  # past min_refetch_interval_s: one refetch is allowed
            concurrent = await asyncio.gather(
                *(pipeline.decide(request_view(request)) for request in flood)
            )
            sequential = [await pipeline.decide(request_view(request)) for request in flood]
            return list(concurrent), sequential
        finally:
            await pipeline.stop()

    concurrent, sequential = asyncio.run(scenario())

    assert {(d.status, d.reason) for d in concurrent + sequential} == {
        (401, "identity.unknown_key")
    }
    assert idp.jwks_fetches() <= 2


def test_idp_down_at_start_means_not_ready_and_503(idp: Idp, tmp_path: Path) -> None:
    idp.control("/__idp/mode?mode=down")

    async def scenario() -> tuple[bool, Decision]:
        pipeline = Pipeline(load_policy(idp.policy(tmp_path)))
        await pipeline.start()
        try:
            return pipeline.ready, await pipeline.decide(request_view(bearer(idp.mint())))
        finally:
            await pipeline.stop()

    ready, decision = asyncio.run(scenario())

    assert ready is False
    assert (decision.allowed, decision.status) == (False, 503)
    assert decision.reason == "identity.keys_unavailable"


def test_idp_answering_garbage_after_a_good_start_keeps_the_old_keys(
    idp: Idp, tmp_path: Path
) -> None:
    async def scenario() -> tuple[bool, bool, Decision, Decision]:
        pipeline = Pipeline(load_policy(idp.policy(tmp_path)))
        await pipeline.start()
        try:
            ready_before = pipeline.ready
            idp.control("/__idp/mode?mode=garbage")
            # An unknown kid makes the layer refetch now: the garbage answer is refused...
            forged = idp.mint().split(".")
            header = json.loads(base64.urlsafe_b64decode(forged[0] + "=="))
            header["kid"] = "rotated-away"
            stranger = ".".join([json_segment(header), *forged[1:]])
            refetched = await pipeline.decide(request_view(bearer(stranger)))
            # ...and the keys loaded at start keep verifying fresh tokens.
            fresh = await pipeline.decide(request_view(bearer(idp.mint(subject="still-here"))))
            return ready_before, pipeline.ready, refetched, fresh
        finally:
            await pipeline.stop()

    ready_before, ready_after, refetched, fresh = asyncio.run(scenario())

    assert ready_before and ready_after
    assert_refused(refetched, "unknown_key")
    assert principal_of(fresh)["subject"] == "still-here"
    assert idp.jwks_fetches() == 1  # the garbage discovery document never led to the JWKS


# ---- token locations and the dev-token command ----------------------------------------

LOCATIONS_POLICY = """
    version: 1
    identity:
      jwt:
        - name: from-cookie
          issuer: https://issuer.test
          audiences: [api://authz]
          algorithms: [RS256]
          keys: { jwks_file: jwks.json }
          token: { cookie: session }
        - name: from-header
          issuer: https://issuer.test
          audiences: [api://authz]
          algorithms: [RS256]
          keys: { jwks_file: jwks.json }
          token: { header: x-access-token }
    routes:
      - { name: any, match: { path: { prefix: / } } }
"""


def test_tokens_from_a_cookie_or_a_configured_header(tmp_path: Path) -> None:
    write_jwks(tmp_path, jwks_document())
    policy = write_policy(tmp_path, LOCATIONS_POLICY)
    signed = token("RS256")
    in_cookie = check_request("GET", "/x", headers={"cookie": f"theme=dark; session={signed}"})
    in_header = check_request("GET", "/x", headers={"x-access-token": signed})
    as_bearer = check_request("GET", "/x", headers={"authorization": f"Bearer {signed}"})
    cookie, header, bearer_only = decide_all(policy, in_cookie, in_header, as_bearer)
    assert cookie.allowed and header.allowed
    # Authorization is not a configured location here: no credential, so a 401.
    assert (bearer_only.status, bearer_only.reason) == (401, "identity.missing_credentials")


def test_dev_token_command_mints_what_the_demo_idp_verifies(tmp_path: Path) -> None:
    from authz_service.devstack.idp import ensure_idp_keys, public_jwks

    keys = tmp_path / "idp"
    ensure_idp_keys(keys)
    command = [sys.executable, "-m", "authz_service", "dev-token", "--keys", str(keys),
               "--issuer", "http://idp.test", "--subject", "dora", "--tier", "pro",
               "--role", "admin", "--role", "ops", "--scope", "chat", "--audience", "aud-1",
               "--lifetime", "120"]  # fmt: skip
    minted = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    jwk = jwt.PyJWKSet.from_dict(public_jwks(keys))[jwt.get_unverified_header(minted)["kid"]]
    verified = jwt.decode(minted, jwk.key, algorithms=["RS256"], audience="aud-1",
                          issuer="http://idp.test")  # fmt: skip
    assert verified["sub"] == "dora"
    assert verified["https://authz.demo/tier"] == "pro"
    assert verified["roles"] == ["admin", "ops"] and verified["scope"] == "chat"
    assert verified["exp"] - verified["iat"] == 120
    expired = subprocess.run([*command, "--expired"], capture_output=True, text=True, check=True)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(expired.stdout.strip(), jwk.key, algorithms=["RS256"], audience="aud-1")
    missing = subprocess.run(
        [sys.executable, "-m", "authz_service", "dev-token", "--keys", str(tmp_path / "none")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert missing.returncode == 2 and "start `make run` first" in missing.stderr
