"""The demo identity provider's signing keys and token minting.

The keys live as a private JWK set in ``signing-keys.json``, made at start and never committed
(``.run/`` is gitignored). The mock upstream publishes the public half as an OIDC provider;
tests and the demo mint real signed JWTs with :func:`mint_token`. Every function reads the
file afresh, so a rotation made by another process (the mock upstream's ``/__idp/rotate``)
is seen at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

TIER_CLAIM = "https://authz.demo/tier"
TENANT_CLAIM = "https://authz.demo/tenant"
DEFAULT_AUDIENCE = "authz-demo"
KEYS_FILE = "signing-keys.json"

_LOCK_FILE = ".signing-keys.lock"
# An allow-list rather than a deny-list of private members: a key type added later cannot leak
# its private parts by omission.
_PUBLIC_MEMBERS = {"RSA": ("kty", "n", "e"), "EC": ("kty", "crv", "x", "y")}
_KEY_METADATA = ("kid", "alg", "use")
# Beyond any clock-skew leeway a verifier would reasonably allow.
_EXPIRED_MARGIN_S = 60


def ensure_idp_keys(directory: Path) -> Path:
    """Create ``directory/signing-keys.json`` (one RS256 and one ES256 key) unless it exists.

    Returns the file's path."""
    file = directory / KEYS_FILE
    if not directory.exists():
        directory.mkdir(parents=True, exist_ok=True)
        # mkdir's mode is filtered through the umask; chmod makes 0700 certain.
        directory.chmod(0o700)
    with _locked(directory):
        # Checked under the lock: the mock upstream and a minting process may start together,
        # and the loser must not replace keys the winner already signed with.
        if not file.exists():
            _write_keys(directory, [_new_rsa_jwk(), _new_ec_jwk()])
    return file


def rotate_keys(directory: Path, *, keep_old: bool = True) -> str:
    """Put a new RS256 key first (where verifiers and :func:`mint_token` look first).

    With ``keep_old=False`` every older key is dropped, so tokens they signed stop verifying.
    Returns the new key's kid."""
    ensure_idp_keys(directory)
    with _locked(directory):
        new = _new_rsa_jwk()
        _write_keys(directory, [new, *_read_keys(directory)] if keep_old else [new])
    kid: str = new["kid"]
    return kid


def public_jwks(directory: Path) -> dict[str, Any]:
    """The JWK set a verifier may see: public members plus kid, alg and use."""
    keys = []
    for jwk in _read_keys(directory):
        members = _PUBLIC_MEMBERS.get(jwk.get("kty", ""))
        if members is None:
            raise ValueError(f"{directory / KEYS_FILE}: unsupported key type {jwk.get('kty')!r}")
        keys.append({name: jwk[name] for name in (*members, *_KEY_METADATA) if name in jwk})
    return {"keys": keys}


def signing_algorithms(directory: Path) -> list[str]:
    """The algorithms of the current keys, for the discovery document."""
    return sorted({jwk["alg"] for jwk in _read_keys(directory)})


def mint_token(
    directory: Path,
    *,
    issuer: str,
    audience: str | list[str] = DEFAULT_AUDIENCE,
    subject: str = "demo-user",
    tier: str = "free",
    roles: list[str] | None = None,
    scopes: list[str] | None = None,
    tenant: str = "demo",
    lifetime_s: int = 3600,
    expired: bool = False,
    not_before_s: int = 0,
    algorithm: str | None = None,
    kid: str | None = None,
    extra_claims: dict[str, Any] | None = None,
    now: int | None = None,
) -> str:
    """A JWT signed with one of the provider's keys.

    The key is the one with ``kid`` if given, else the first whose alg is ``algorithm``
    (RS256 by default). ``algorithm`` defaults to the key's own alg; pass another with ``kid``
    to sign with a key under an alg its JWK does not declare (a token verifiers must reject).
    ``roles``/``scopes`` of None leave the ``roles``/``scope`` claims out. ``extra_claims``
    are applied last; a value of None removes that claim (to mint a token without, say, exp).
    """
    if lifetime_s <= 0:
        raise ValueError(f"lifetime_s must be positive, got {lifetime_s}")
    jwk, alg = _signing_key(directory, algorithm, kid)
    now = int(time.time()) if now is None else now
    issued_at = now - 2 * lifetime_s - _EXPIRED_MARGIN_S if expired else now
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": issued_at,
        "exp": issued_at + lifetime_s,
        TIER_CLAIM: tier,
        TENANT_CLAIM: tenant,
    }
    if not_before_s > 0:
        claims["nbf"] = issued_at + not_before_s
    if roles is not None:
        claims["roles"] = list(roles)
    if scopes is not None:
        claims["scope"] = " ".join(scopes)
    for name, value in (extra_claims or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    key = jwt.PyJWK(jwk).key
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": jwk["kid"], "typ": "JWT"})


def _signing_key(
    directory: Path, algorithm: str | None, kid: str | None
) -> tuple[dict[str, Any], str]:
    keys = _read_keys(directory)
    if kid is not None:
        jwk = next((k for k in keys if k.get("kid") == kid), None)
        if jwk is None:
            raise LookupError(f"no key with kid {kid!r} in {directory / KEYS_FILE}")
        return jwk, algorithm or jwk["alg"]
    wanted = algorithm or "RS256"
    jwk = next((k for k in keys if k.get("alg") == wanted), None)
    if jwk is None:
        raise LookupError(f"no {wanted} key in {directory / KEYS_FILE}")
    return jwk, wanted


def _new_rsa_jwk() -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return _with_metadata(RSAAlgorithm.to_jwk(key, as_dict=True), "RS256")


def _new_ec_jwk() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    return _with_metadata(ECAlgorithm.to_jwk(key, as_dict=True), "ES256")


def _with_metadata(jwk: dict[str, Any], alg: str) -> dict[str, Any]:
    return {"kid": secrets.token_hex(8), "alg": alg, "use": "sig", **jwk}


def _read_keys(directory: Path) -> list[dict[str, Any]]:
    file = directory / KEYS_FILE
    document = json.loads(file.read_text(encoding="utf-8"))
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise ValueError(f"{file}: not a JWK set")
    return keys


def _write_keys(directory: Path, keys: list[dict[str, Any]]) -> None:
    # mkstemp creates the file 0600, so the private keys are never readable by others, not
    # even briefly; the rename makes readers in other processes see the old or the new set,
    # never half a file.
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".signing-keys.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"keys": keys}, out, indent=2)
            out.write("\n")
        Path(temporary).replace(directory / KEYS_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """Serialise read-modify-write of the key file across threads and processes."""
    # flock locks belong to the open file description, so two threads of one process that
    # each open the lock file exclude each other as well.
    with (directory / _LOCK_FILE).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
