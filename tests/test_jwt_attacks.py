"""Known attacks on JWT verification, each refused by the real pipeline with 401, the
reason a client can act on, and an RFC 6750 challenge that gives nothing away."""

from __future__ import annotations

import base64
import hashlib
import hmac
import string
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm

from tests.test_identity import (
    AUDIENCE,
    HMAC_ISSUER,
    ISSUER,
    RS_ONLY_ISSUER,
    TYPED_ISSUER,
    assert_refused,
    b64url,
    bearer,
    challenge_attributes,
    claims,
    decide,
    decide_all,
    forge,
    json_segment,
    kid_of,
    make_policy,
    principal_of,
    sign,
    signing_key,
)

_RFC6750_TEXT = set(string.printable[:95]) - {'"', "\\"}  # %x20-21 / %x23-5B / %x5D-7E
_BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


@pytest.fixture
def policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return make_policy(tmp_path, monkeypatch)


def attacker(alg: str) -> Any:
    return signing_key(alg, "attacker")


def rsa_public_pem() -> bytes:
    public: rsa.RSAPublicKey = signing_key("RS256").public_key()
    return public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


def hmac_signed(header: dict[str, Any], payload: dict[str, Any], secret: bytes) -> str:
    """HS256 done by hand: pyjwt itself refuses a PEM as an HMAC secret."""
    signing_input = f"{json_segment(header)}.{json_segment(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def segments(token: str) -> list[str]:
    return token.split(".")


def swap(token: str, index: int, segment: str) -> str:
    parts = segments(token)
    parts[index] = segment
    return ".".join(parts)


def non_canonical(segment: str) -> str:
    """The same bytes with a stray bit set in the last character's unused low bits."""
    assert len(segment) % 4 in (2, 3), "needs unused bits in the last character"
    twisted = segment[:-1] + _BASE64URL[_BASE64URL.index(segment[-1]) ^ 1]
    padding = "=" * (-len(segment) % 4)
    assert base64.urlsafe_b64decode(twisted + padding) == base64.urlsafe_b64decode(
        segment + padding
    )
    return twisted


def tampered() -> str:
    original = sign(claims(sub="alice"), "RS256")
    return swap(original, 1, json_segment(claims(sub="admin", roles=["admin"])))


def psychic(alg: str, size: int) -> str:
    """CVE-2022-21449: an ECDSA signature with r = s = 0."""
    return forge({"alg": alg, "typ": "JWT", "kid": kid_of(alg)}, claims(), b"\x00" * size)


def embedded(member: str, value: Any) -> str:
    return sign(claims(), "RS256", key=attacker("RS256"), kid="attacker", headers={member: value})


def with_kid(kid: Any) -> str:
    if not isinstance(kid, str):  # pyjwt will not write such a header
        return forge({"alg": "RS256", "typ": "JWT", "kid": kid}, claims(), b"\x02" * 256)
    return sign(claims(), "RS256", key=attacker("RS256"), kid=kid)


NOW = int(time.time())

ATTACKS: dict[str, tuple[Callable[[], str], str]] = {
    # --- unsigned and unsigned-looking tokens
    "alg none": (
        lambda: forge({"alg": "none", "typ": "JWT"}, claims(), b"sig"),
        "algorithm_not_allowed",
    ),
    "alg None": (lambda: forge({"alg": "None"}, claims(), b"sig"), "algorithm_not_allowed"),
    "alg NONE": (lambda: forge({"alg": "NONE"}, claims(), b"sig"), "algorithm_not_allowed"),
    "alg nOnE": (lambda: forge({"alg": "nOnE"}, claims(), b"sig"), "algorithm_not_allowed"),
    "no alg": (lambda: forge({"kid": kid_of("RS256")}, claims()), "algorithm_not_allowed"),
    "alg not a string": (lambda: forge({"alg": ["RS256"]}, claims()), "algorithm_not_allowed"),
    "alg none, no signature": (
        lambda: f"{json_segment({'alg': 'none'})}.{json_segment(claims())}.",
        "token_malformed",
    ),
    "empty signature": (lambda: swap(sign(claims()), 2, ""), "token_malformed"),
    # --- RS256 → HS256 key confusion: the public key PEM as an HMAC secret
    "HS256 with the RSA PEM, against an RS256-only provider": (
        lambda: hmac_signed(
            {"alg": "HS256", "typ": "JWT", "kid": kid_of("RS256")},
            claims(iss=RS_ONLY_ISSUER),
            rsa_public_pem(),
        ),
        "algorithm_not_allowed",
    ),
    "HS256 with the RSA PEM, against a provider allowing RS256 and more": (
        lambda: hmac_signed(
            {"alg": "HS256", "typ": "JWT", "kid": kid_of("RS256")}, claims(), rsa_public_pem()
        ),
        "algorithm_not_allowed",
    ),
    "HS256 with the RSA PEM, against an HMAC provider": (
        lambda: hmac_signed({"alg": "HS256"}, claims(iss=HMAC_ISSUER), rsa_public_pem()),
        "bad_signature",
    ),
    "HS256 with the RSA JWK's n as the secret": (
        lambda: hmac_signed(
            {"alg": "HS256", "kid": kid_of("RS256")},
            claims(),
            RSAAlgorithm.to_jwk(signing_key("RS256").public_key(), as_dict=True)["n"].encode(),
        ),
        "algorithm_not_allowed",
    ),
    # --- keys named or carried by the token
    "embedded jwk": (
        lambda: embedded("jwk", RSAAlgorithm.to_jwk(attacker("RS256").public_key(), as_dict=True)),
        "embedded_key_refused",
    ),
    "jku elsewhere": (
        lambda: embedded("jku", "https://evil.test/.well-known/jwks.json"),
        "embedded_key_refused",
    ),
    "x5u elsewhere": (
        lambda: embedded("x5u", "https://evil.test/cert.pem"),
        "embedded_key_refused",
    ),
    "x5c": (lambda: embedded("x5c", ["MIIBszCCAVmgAwIBAgIUFake=="]), "embedded_key_refused"),
    # --- kid as an injection vector
    "kid path traversal": (lambda: with_kid("../../etc/passwd"), "unknown_key"),
    "kid /dev/null": (lambda: with_kid("/dev/null"), "unknown_key"),
    "kid SQL injection": (lambda: with_kid("' OR 1=1 --"), "unknown_key"),
    "kid shell injection": (lambda: with_kid("$(id)"), "unknown_key"),
    "kid of 10 KB": (lambda: with_kid("k" * 10_240), "token_malformed"),
    "kid a number": (lambda: with_kid(1), "token_malformed"),
    "kid an object": (lambda: with_kid({"$ne": ""}), "token_malformed"),
    # --- a published key with an algorithm it was not published for
    "RS256 key used for PS256": (
        lambda: sign(claims(), "PS256", key=signing_key("RS256"), kid=kid_of("RS256")),
        "unknown_key",
    ),
    "ES256 token naming an RSA kid": (
        lambda: sign(claims(), "ES256", kid=kid_of("RS256")),
        "unknown_key",
    ),
    # --- signatures
    "ES256 r = s = 0 (CVE-2022-21449)": (lambda: psychic("ES256", 64), "bad_signature"),
    "ES384 r = s = 0": (lambda: psychic("ES384", 96), "bad_signature"),
    "ES512 r = s = 0": (lambda: psychic("ES512", 132), "bad_signature"),
    "tampered payload": (tampered, "bad_signature"),
    "same kid, another RSA key": (
        lambda: sign(claims(), "RS256", key=attacker("RS256")),
        "bad_signature",
    ),
    "same kid, another P-256 key": (
        lambda: sign(claims(), "ES256", key=attacker("ES256")),
        "bad_signature",
    ),
    "same kid, another Ed25519 key": (
        lambda: sign(claims(), "EdDSA", key=attacker("EdDSA")),
        "bad_signature",
    ),
    "no kid, another key": (
        lambda: sign(claims(), "RS256", key=attacker("RS256"), kid=None),
        "bad_signature",
    ),
    "HS256 with a wrong secret": (
        lambda: sign(claims(iss=HMAC_ISSUER), "HS256", key=b"w" * 64),
        "bad_signature",
    ),
    # --- claims
    "expired": (lambda: sign(claims(iat=NOW - 7200, exp=NOW - 3600)), "token_expired"),
    "not yet valid (nbf)": (lambda: sign(claims(nbf=NOW + 3600)), "token_not_yet_valid"),
    "wrong issuer": (lambda: sign(claims(iss="https://evil.test")), "wrong_issuer"),
    "issuer with a trailing slash": (lambda: sign(claims(iss=ISSUER + "/")), "wrong_issuer"),
    "no issuer": (lambda: sign(claims(iss=None)), "wrong_issuer"),
    "wrong audience": (lambda: sign(claims(aud="api://evil")), "wrong_audience"),
    "wrong audiences (array)": (
        lambda: sign(claims(aud=["api://evil", "api://other"])),
        "wrong_audience",
    ),
    "no exp": (lambda: sign(claims(exp=None)), "missing_claim"),
    "iat in the future": (
        lambda: sign(claims(iat=NOW + 3600, exp=NOW + 7200)),
        "issued_in_future",
    ),
    "lifetime longer than max_lifetime_s": (
        lambda: sign(claims(iat=NOW, exp=NOW + 2 * 86_400)),
        "token_lifetime_too_long",
    ),
    "issued long ago, expiring soon": (
        lambda: sign(claims(iat=NOW - 3 * 86_400, exp=NOW + 60)),
        "token_lifetime_too_long",
    ),
    # --- shape and encoding
    "JWE (five segments)": (
        lambda: ".".join([json_segment({"alg": "RSA-OAEP", "enc": "A256GCM"}), *"abcd"]),
        "token_malformed",
    ),
    "two segments": (lambda: ".".join(segments(sign(claims()))[:2]), "token_malformed"),
    "four segments": (lambda: sign(claims()) + ".e30", "token_malformed"),
    "non-canonical signature": (
        lambda: swap(sign(claims()), 2, non_canonical(segments(sign(claims()))[2])),
        "token_malformed",
    ),
    "padded signature": (lambda: sign(claims()) + "==", "token_malformed"),
    "standard base64 alphabet": (
        lambda: swap(sign(claims()), 2, segments(sign(claims()))[2][:-2] + "+/"),
        "token_malformed",
    ),
    "header not JSON": (
        lambda: swap(sign(claims()), 0, b64url(b"{'alg': 'RS256'}")),
        "token_malformed",
    ),
    "payload a JSON array": (
        lambda: swap(sign(claims()), 1, json_segment([claims()])),
        "token_malformed",
    ),
    "over max_token_bytes": (
        lambda: sign(claims(padding="p" * 20_000)),
        "token_too_large",
    ),
    "over the HMAC provider's own max_token_bytes": (
        lambda: sign(claims(iss=HMAC_ISSUER, padding="p" * 9_000), "HS256"),
        "token_too_large",
    ),
    # --- header extensions
    "crit": (lambda: sign(claims(), headers={"crit": ["exp"], "exp": NOW}), "token_malformed"),
    "b64 false (RFC 7797)": (
        lambda: sign(claims(), headers={"b64": False, "crit": ["b64"]}),
        "token_malformed",
    ),
    "typ mismatch": (
        lambda: sign(claims(iss=TYPED_ISSUER), "ES256", headers={"typ": "at+jwt"}),
        "wrong_type",
    ),
    "typ missing where required": (
        lambda: sign(claims(iss=TYPED_ISSUER), "ES256", headers={"typ": None}),
        "wrong_type",
    ),
}


@pytest.mark.parametrize(("make_token", "reason"), ATTACKS.values(), ids=ATTACKS.keys())
def test_attack_is_refused(policy: Path, make_token: Callable[[], str], reason: str) -> None:
    attack = make_token()
    decision = decide(policy, bearer(attack))

    assert not decision.allowed
    assert_refused(decision, reason, attack)
    assert "x-authz-subject" not in decision.headers


@pytest.mark.parametrize(
    "alg",
    [
        "RS256\r\nx-injected: yes",  # header injection into WWW-Authenticate
        'RS256\\"',  # a backslash breaks the quoted-string
        "RS256\u00e9",  # not ASCII
        "A" * 4000,  # attacker input echoed at length
    ],
    ids=["CRLF", "backslash", "non-ASCII", "4000 chars"],
)
def test_error_description_is_an_rfc6750_value_whatever_the_token_says(
    policy: Path, alg: str
) -> None:
    attack = forge({"alg": alg, "kid": kid_of("RS256")}, claims())
    decision = decide(policy, bearer(attack))

    assert (decision.status, decision.reason) == (401, "identity.algorithm_not_allowed")
    challenge = decision.headers["www-authenticate"]
    assert "\r" not in challenge and "\n" not in challenge
    description = challenge_attributes(challenge)["error_description"]
    assert set(description) <= _RFC6750_TEXT
    assert challenge.endswith('"') and challenge.count('"') == 6
    assert len(challenge) < 512


def test_close_calls_are_accepted(policy: Path) -> None:
    """The controls of the attacks above: what must still pass."""
    decisions = decide_all(
        policy,
        bearer(sign(claims(aud=["api://unrelated", AUDIENCE]))),  # array with our audience
        bearer(sign(claims(aud="api://authz-admin"))),  # the provider's second audience
        bearer(sign(claims(iat=NOW - 100, exp=int(time.time()) - 10))),  # within leeway
        bearer(sign(claims(nbf=int(time.time()) + 10))),  # within leeway
        bearer(sign(claims(iat=NOW, exp=NOW + 86_400))),  # exactly max_lifetime_s
        bearer(sign(claims(iss=TYPED_ISSUER), "ES256")),  # typ JWT, as pyjwt writes it
        bearer(sign(claims(iss=TYPED_ISSUER), "ES256", headers={"typ": "jwt"})),
        bearer(sign(claims(), "RS256", kid=None)),  # one RS256 key: no kid needed
        bearer(sign(claims(iss=HMAC_ISSUER), "HS256", headers={"kid": "whatever"})),
    )

    assert [d.reason for d in decisions] == ["allowed"] * len(decisions), [
        d.message for d in decisions if not d.allowed
    ]
    assert principal_of(decisions[0])["subject"] == "alice"
