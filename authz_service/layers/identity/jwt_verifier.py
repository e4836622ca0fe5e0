"""Strict JWT verification, for one provider.

pyjwt checks the signature and the registered claims; everything around it that pyjwt
leaves open is closed here first: the token's shape and encoding, algorithms from an
allowlist, keys only from the provider (never from the token), a key only with the
algorithm family it was published for, and sane lifetimes.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from typing import Any

import jwt
import orjson

from authz_service.layers.identity.jwks import KeyCache
from authz_service.layers.identity.settings import HMAC_ALGORITHMS, JwtProvider

_SEGMENT = re.compile(r"^[A-Za-z0-9_-]*$")
_REFUSED_HEADERS = ("jwk", "jku", "x5u", "x5c")
"""Header members that name or carry a key: trusting them lets the sender pick the key."""
_MAX_KID_CHARS = 256


class TokenRejected(Exception):
    """Why a token is refused: a stable reason and a message without key material."""

    def __init__(self, reason: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.status = status


def split_token(token: str, max_bytes: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The decoded header and (unverified) payload; only shape and encoding are checked."""
    if len(token) > max_bytes:
        raise TokenRejected("token_too_large", f"the token is larger than {max_bytes} bytes")
    segments = token.split(".")
    if len(segments) == 5:
        raise TokenRejected("token_malformed", "encrypted tokens (JWE) are not accepted")
    if len(segments) != 3:
        raise TokenRejected("token_malformed", "a token has three dot-separated segments")
    if not segments[2]:
        raise TokenRejected("token_malformed", "the token has an empty signature")
    header = _json_segment(segments[0], "header")
    payload = _json_segment(segments[1], "payload")
    _decode_segment(segments[2], "signature")
    return header, payload


def _decode_segment(segment: str, what: str) -> bytes:
    if not _SEGMENT.match(segment):
        raise TokenRejected("token_malformed", f"the token's {what} is not base64url")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise TokenRejected("token_malformed", f"the token's {what} is not base64url") from exc
    # Non-canonical encodings (stray bits in the last character) make two different
    # strings carry the same token: a cache-key and replay-detection hazard.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != segment:
        raise TokenRejected("token_malformed", f"the token's {what} is not canonical base64url")
    return raw


def _json_segment(segment: str, what: str) -> dict[str, Any]:
    try:
        value = orjson.loads(_decode_segment(segment, what))
    except orjson.JSONDecodeError as exc:
        raise TokenRejected("token_malformed", f"the token's {what} is not JSON") from exc
    if not isinstance(value, dict):
        raise TokenRejected("token_malformed", f"the token's {what} is not a JSON object")
    return value


class JwtVerifier:
    def __init__(self, provider: JwtProvider, keys: KeyCache | None) -> None:
        self.provider = provider
        self._keys = keys
        self._audiences = list(provider.audiences)
        self._required = ["exp"] if provider.require_exp else []

    async def verify(self, token: str, header: Mapping[str, Any]) -> dict[str, Any]:
        """The verified claims of ``token`` (already split by :func:`split_token`)."""
        alg = self._check_header(header)
        key = await self._key_for(header.get("kid"), alg)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audiences,
                issuer=self.provider.issuer,
                leeway=self.provider.leeway_s,
                # iat is checked below, with its own reason (pyjwt calls it "not yet valid").
                options={"require": self._required, "verify_signature": True, "verify_iat": False},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("token_expired", "the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenRejected("token_not_yet_valid", "the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("wrong_audience", "the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("wrong_issuer", "the token is from another issuer") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("missing_claim", f"the token has no {exc.claim!r} claim") from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenRejected("bad_signature", "the token's signature does not verify") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenRejected("token_invalid", f"the token is invalid: {exc}") from exc
        self._check_lifetime(claims)
        return claims

    def _check_header(self, header: Mapping[str, Any]) -> str:
        alg = header.get("alg")
        if not isinstance(alg, str) or alg.lower() == "none":
            raise TokenRejected("algorithm_not_allowed", "unsigned tokens are not accepted")
        if alg not in self.provider.algorithms:
            # Never echo the token's alg: it is attacker text bound for a response header.
            accepted = ", ".join(sorted(self.provider.algorithms))
            raise TokenRejected("algorithm_not_allowed", f"the token's algorithm is not {accepted}")
        for member in _REFUSED_HEADERS:
            if member in header:
                raise TokenRejected(
                    "embedded_key_refused", f"tokens that name their own key ({member}) are refused"
                )
        if "crit" in header:
            raise TokenRejected("token_malformed", "critical header extensions are not supported")
        typ = self.provider.typ
        if typ is not None and str(header.get("typ", "")).lower() != typ.lower():
            raise TokenRejected("wrong_type", f"the token's typ is not {typ}")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > _MAX_KID_CHARS):
            raise TokenRejected("token_malformed", "the token's kid is not a short string")
        return alg

    async def _key_for(self, kid: str | None, alg: str) -> Any:
        if alg in HMAC_ALGORITHMS:
            return self.provider.hmac_secret
        if self._keys is None or self._keys.keys is None:
            raise TokenRejected(
                "keys_unavailable", "the identity provider's keys are not loaded", status=503
            )
        found = self._keys.keys.find(kid, alg)
        if found is None:
            # Maybe the provider rotated: one rate-limited refetch, shared by all callers.
            refreshed = await self._keys.refetch_for_unknown_kid()
            found = refreshed.find(kid, alg) if refreshed is not None else None
        if found is None:
            raise TokenRejected("unknown_key", "no key of the identity provider matches the token")
        return found.key

    def _check_lifetime(self, claims: Mapping[str, Any]) -> None:
        now = time.time()
        leeway = self.provider.leeway_s
        iat = claims.get("iat")
        if iat is not None and (not isinstance(iat, int | float) or isinstance(iat, bool)):
            raise TokenRejected("token_malformed", "the token's iat is not a number")
        if iat is not None and iat > now + leeway:
            raise TokenRejected("issued_in_future", "the token claims to be issued in the future")
        exp = claims.get("exp")
        limit = self.provider.max_lifetime_s
        if limit is not None and isinstance(exp, int | float):
            start = iat if iat is not None else now
            if exp - start > limit + leeway:
                raise TokenRejected(
                    "token_lifetime_too_long", f"the token lives longer than {limit} seconds"
                )
