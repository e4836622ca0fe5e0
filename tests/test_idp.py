"""Tests for the demo identity provider: key files, public JWK set, minted tokens, rotation."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from authz_service.devstack.idp import (
    DEFAULT_AUDIENCE,
    TENANT_CLAIM,
    TIER_CLAIM,
    ensure_idp_keys,
    mint_token,
    public_jwks,
    rotate_keys,
)

ISSUER = "http://127.0.0.1:18080"
PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi"}


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    directory = tmp_path / "idp"
    ensure_idp_keys(directory)
    return directory


def verify(
    token: str, directory: Path, *, audience: str | list[str] = DEFAULT_AUDIENCE, leeway: int = 0
) -> dict[str, Any]:
    """Verify as a relying party would: the key by kid from the public set, its alg only."""
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = jwt.PyJWKSet.from_dict(public_jwks(directory))[kid]
    claims: dict[str, Any] = jwt.decode(
        token,
        jwk.key,
        algorithms=[jwk.algorithm_name],
        audience=audience,
        issuer=ISSUER,
        leeway=leeway,
        options={"require": ["exp", "iat", "iss", "sub", "aud"]},
    )
    return claims


def private_keys(directory: Path) -> list[dict[str, Any]]:
    keys: list[dict[str, Any]] = json.loads((directory / "signing-keys.json").read_text())["keys"]
    return keys


# --- key files ---------------------------------------------------------------------------------


def test_ensure_creates_private_rsa_and_ec_keys_with_strict_modes(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "idp"
    file = ensure_idp_keys(directory)

    assert file == directory / "signing-keys.json"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(file.stat().st_mode) == 0o600
    keys = private_keys(directory)
    assert [(k["kty"], k["alg"]) for k in keys] == [("RSA", "RS256"), ("EC", "ES256")]
    assert all(k["use"] == "sig" and PRIVATE_MEMBERS & k.keys() for k in keys)
    assert keys[1]["crv"] == "P-256"
    assert len({k["kid"] for k in keys}) == 2
    rsa_key = jwt.PyJWK(keys[0]).key
    assert rsa_key.key_size == 2048


def test_ensure_keeps_existing_keys(keys: Path) -> None:
    before = (keys / "signing-keys.json").read_bytes()
    ensure_idp_keys(keys)
    assert (keys / "signing-keys.json").read_bytes() == before


def test_ensure_leaves_the_mode_of_an_existing_directory_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    ensure_idp_keys(tmp_path)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "signing-keys.json").stat().st_mode) == 0o600


def test_public_jwks_has_public_members_only(keys: Path) -> None:
    published = public_jwks(keys)["keys"]
    private = private_keys(keys)

    assert [k["kid"] for k in published] == [k["kid"] for k in private]
    assert {frozenset(k) for k in published} == {
        frozenset({"kty", "n", "e", "kid", "alg", "use"}),
        frozenset({"kty", "crv", "x", "y", "kid", "alg", "use"}),
    }
    assert not PRIVATE_MEMBERS & set().union(*(k.keys() for k in published))


# --- minted tokens -----------------------------------------------------------------------------


def test_minted_token_carries_the_requested_claims(keys: Path) -> None:
    token = mint_token(
        keys,
        issuer=ISSUER,
        subject="alice",
        tier="pro",
        roles=["admin", "reader"],
        scopes=["chat:write", "images:read"],
        tenant="acme",
    )

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256"
    assert header["typ"] == "JWT"
    assert header["kid"] == private_keys(keys)[0]["kid"]
    claims = verify(token, keys)
    assert claims["iss"] == ISSUER
    assert claims["sub"] == "alice"
    assert claims["aud"] == DEFAULT_AUDIENCE
    assert claims[TIER_CLAIM] == "pro"
    assert claims[TENANT_CLAIM] == "acme"
    assert claims["roles"] == ["admin", "reader"]
    assert claims["scope"] == "chat:write images:read"
    assert "nbf" not in claims
    assert claims["exp"] - claims["iat"] == 3600
    assert abs(claims["iat"] - time.time()) < 60


def test_defaults_and_omitted_roles_and_scopes(keys: Path) -> None:
    claims = verify(mint_token(keys, issuer=ISSUER), keys)
    assert claims["sub"] == "demo-user"
    assert claims[TIER_CLAIM] == "free"
    assert claims[TENANT_CLAIM] == "demo"
    assert "roles" not in claims
    assert "scope" not in claims


def test_audience_list_and_wrong_audience(keys: Path) -> None:
    token = mint_token(keys, issuer=ISSUER, audience=["authz-demo", "other"])
    assert verify(token, keys, audience="other")["aud"] == ["authz-demo", "other"]
    with pytest.raises(jwt.InvalidAudienceError):
        verify(mint_token(keys, issuer=ISSUER, audience="elsewhere"), keys)


def test_wrong_issuer_fails(keys: Path) -> None:
    with pytest.raises(jwt.InvalidIssuerError):
        verify(mint_token(keys, issuer="http://evil.example"), keys)


def test_es256_token_verifies_with_the_ec_key(keys: Path) -> None:
    token = mint_token(keys, issuer=ISSUER, algorithm="ES256")
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    assert header["kid"] == private_keys(keys)[1]["kid"]
    assert verify(token, keys)["sub"] == "demo-user"


def test_kid_selects_the_key_and_its_alg(keys: Path) -> None:
    ec_kid = private_keys(keys)[1]["kid"]
    token = mint_token(keys, issuer=ISSUER, kid=ec_kid)
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": ec_kid, "typ": "JWT"}
    verify(token, keys)


def test_kid_with_an_alg_its_key_does_not_declare_is_rejected_by_verifiers(keys: Path) -> None:
    rsa_kid = private_keys(keys)[0]["kid"]
    token = mint_token(keys, issuer=ISSUER, kid=rsa_kid, algorithm="RS384")
    assert jwt.get_unverified_header(token)["alg"] == "RS384"
    with pytest.raises(jwt.InvalidAlgorithmError):
        verify(token, keys)


def test_unknown_kid_or_algorithm_is_a_lookup_error(keys: Path) -> None:
    with pytest.raises(LookupError, match="kid"):
        mint_token(keys, issuer=ISSUER, kid="nope")
    with pytest.raises(LookupError, match="PS256"):
        mint_token(keys, issuer=ISSUER, algorithm="PS256")


def test_expired_token_fails_even_with_leeway(keys: Path) -> None:
    token = mint_token(keys, issuer=ISSUER, expired=True, lifetime_s=10)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 10
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(token, keys, leeway=30)
    with pytest.raises(jwt.ExpiredSignatureError):
        verify(mint_token(keys, issuer=ISSUER, expired=True), keys, leeway=60)


def test_not_yet_valid_token_fails(keys: Path) -> None:
    token = mint_token(keys, issuer=ISSUER, not_before_s=600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["nbf"] == claims["iat"] + 600
    with pytest.raises(jwt.ImmatureSignatureError):
        verify(token, keys, leeway=30)


def test_now_fixes_the_timestamps(keys: Path) -> None:
    token = mint_token(keys, issuer=ISSUER, now=1_700_000_000, lifetime_s=120, not_before_s=5)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (
        1_700_000_000,
        1_700_000_005,
        1_700_000_120,
    )


def test_extra_claims_are_added_override_and_none_removes(keys: Path) -> None:
    token = mint_token(
        keys,
        issuer=ISSUER,
        extra_claims={"jti": "abc", TIER_CLAIM: "enterprise", "exp": None},
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["jti"] == "abc"
    assert claims[TIER_CLAIM] == "enterprise"
    assert "exp" not in claims
    with pytest.raises(jwt.MissingRequiredClaimError):
        verify(token, keys)


def test_lifetime_must_be_positive(keys: Path) -> None:
    with pytest.raises(ValueError, match="lifetime"):
        mint_token(keys, issuer=ISSUER, lifetime_s=0)


# --- rotation ----------------------------------------------------------------------------------


def test_rotation_puts_a_new_rsa_key_first_and_keeps_the_old(keys: Path) -> None:
    old_kids = [k["kid"] for k in private_keys(keys)]
    old_token = mint_token(keys, issuer=ISSUER)

    new_kid = rotate_keys(keys)

    assert [k["kid"] for k in public_jwks(keys)["keys"]] == [new_kid, *old_kids]
    assert private_keys(keys)[0]["alg"] == "RS256"
    assert stat.S_IMODE((keys / "signing-keys.json").stat().st_mode) == 0o600
    new_token = mint_token(keys, issuer=ISSUER)
    assert jwt.get_unverified_header(new_token)["kid"] == new_kid
    verify(new_token, keys)
    verify(old_token, keys)  # still published, so still valid


def test_rotation_without_keep_old_drops_the_old_keys(keys: Path) -> None:
    old_token = mint_token(keys, issuer=ISSUER)

    new_kid = rotate_keys(keys, keep_old=False)

    assert [k["kid"] for k in public_jwks(keys)["keys"]] == [new_kid]
    assert stat.S_IMODE((keys / "signing-keys.json").stat().st_mode) == 0o600
    with pytest.raises(KeyError):
        verify(old_token, keys)
    verify(mint_token(keys, issuer=ISSUER), keys)
    with pytest.raises(LookupError):
        mint_token(keys, issuer=ISSUER, algorithm="ES256")


def test_rotation_leaves_no_temporary_files(keys: Path) -> None:
    rotate_keys(keys)
    rotate_keys(keys, keep_old=False)
    assert {p.name for p in keys.iterdir()} == {"signing-keys.json", ".signing-keys.lock"}
