"""Keys that verify JWT signatures: JWKS parsing, where key sets come from, and their cache.

A key is used only with the algorithm family it was published for, so a token's ``alg``
header can never turn a public key into something else (an RSA key into an HMAC secret,
a P-256 key into a P-384 one). Fetching never blocks the event loop: HTTP and file reads
run in threads, bounded in time and size, and the last good key set keeps serving while
the identity provider is down or answers garbage.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_log = structlog.get_logger("authz_service.identity")

MAX_DOCUMENT_BYTES = 1024 * 1024
MIN_RSA_BITS = 2048

_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_ALGORITHM_BY_CURVE = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}
_OKP_SIGNATURE_CURVES = frozenset({"Ed25519", "Ed448"})
# Members only private or symmetric JWKs carry (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_KEY_TYPES = (RSAPublicKey, EllipticCurvePublicKey, Ed25519PublicKey, Ed448PublicKey)

_HTTP_SCHEMES = frozenset({"http", "https"})
_REQUEST_HEADERS = {
    "Accept": "application/jwk-set+json, application/json",
    "User-Agent": "authz-service",
}
_READ_CHUNK = 64 * 1024


class JwksError(Exception):
    """A key set could not be loaded. The message names the problem, never key material."""


@dataclass(frozen=True, slots=True)
class VerificationKey:
    kid: str | None
    algorithms: frozenset[str]
    key: Any


@dataclass(frozen=True, slots=True)
class KeySet:
    keys: tuple[VerificationKey, ...]

    def find(self, kid: str | None, alg: str) -> VerificationKey | None:
        """The key for a token's ``kid`` and ``alg`` headers, or None.

        A token without a kid gets a key only when exactly one key could verify it:
        trying several keys would let any of them vouch for the token."""
        if kid is not None:
            return next((k for k in self.keys if k.kid == kid and alg in k.algorithms), None)
        candidates = [k for k in self.keys if alg in k.algorithms]
        return candidates[0] if len(candidates) == 1 else None


# --- parsing -------------------------------------------------------------------------------


class _Unusable(Exception):
    """Why one JWK is skipped; ``mistake`` when the publisher got something dangerously wrong."""

    def __init__(self, reason: str, *, mistake: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mistake = mistake


def parse_jwks(document: bytes) -> KeySet:
    """The usable signature keys of a JWKS document (RFC 7517 §5).

    Unusable keys are skipped (and logged) so that one odd key does not take the others
    down; a document without any usable key raises :class:`JwksError`."""
    published = _json_object(document, "JWKS").get("keys")
    if not isinstance(published, list):
        raise JwksError('JWKS has no "keys" array')
    keys: list[VerificationKey] = []
    skipped: list[str] = []
    for index, jwk in enumerate(published):
        try:
            key = _verification_key(jwk)
        except _Unusable as unusable:
            label = _key_label(index, jwk)
            log = _log.warning if unusable.mistake else _log.info
            log("jwks_key_skipped", key=label, reason=unusable.reason)
            skipped.append(f"{label}: {unusable.reason}")
            continue
        if key.kid is not None and any(k.kid == key.kid for k in keys):
            # Two keys behind one kid make the choice ambiguous; the first one stays.
            _log.warning("jwks_duplicate_kid", key=_key_label(index, jwk), kept="the first")
            continue
        keys.append(key)
    if not keys:
        detail = "; ".join(skipped[:5]) if skipped else "the keys array is empty"
        raise JwksError(f"JWKS has no usable signature key ({detail})")
    return KeySet(tuple(keys))


def _verification_key(jwk: object) -> VerificationKey:
    if not isinstance(jwk, dict):
        raise _Unusable("not a JSON object")
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _Unusable('"kid" is not a string')
    family, loader_alg = _algorithm_family(jwk)
    if _PRIVATE_MEMBERS & jwk.keys():
        # The public half would load fine, but a leaked private key must not be trusted.
        raise _Unusable("publishes private key material; a JWKS holds public keys", mistake=True)
    _require_signature_use(jwk)
    algorithms = _restrict_to_alg(family, jwk.get("alg"))
    return VerificationKey(kid, algorithms, _public_key(jwk, loader_alg))


def _algorithm_family(jwk: dict[str, Any]) -> tuple[frozenset[str], str]:
    """The algorithms the key type allows, and one pyjwt can load the key with."""
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if kty == "RSA":
        return _RSA_ALGORITHMS, "RS256"
    if kty == "EC":
        alg = _EC_ALGORITHM_BY_CURVE.get(crv) if isinstance(crv, str) else None
        if alg is None:
            raise _Unusable(f"EC curve {_short(crv)} is not P-256, P-384 or P-521")
        return frozenset({alg}), alg
    if kty == "OKP":
        if not isinstance(crv, str) or crv not in _OKP_SIGNATURE_CURVES:
            raise _Unusable(f"OKP curve {_short(crv)} is not Ed25519 or Ed448")
        return frozenset({"EdDSA"}), "EdDSA"
    if kty == "oct":
        raise _Unusable("symmetric key: a shared secret never comes from a JWKS", mistake=True)
    raise _Unusable(f"key type {_short(kty)} is not RSA, EC or OKP")


def _require_signature_use(jwk: dict[str, Any]) -> None:
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise _Unusable(f'"use" is {_short(use)}, not "sig"')
    key_ops = jwk.get("key_ops")
    if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
        raise _Unusable('"key_ops" does not include "verify"')


def _restrict_to_alg(family: frozenset[str], alg: object) -> frozenset[str]:
    if alg is None:
        return family
    if not isinstance(alg, str) or alg not in family:
        allowed = ", ".join(sorted(family))
        raise _Unusable(f'"alg" {_short(alg)} is not one of the key type\'s ({allowed})')
    return frozenset({alg})


def _public_key(jwk: dict[str, Any], loader_alg: str) -> Any:
    try:
        key = jwt.PyJWK(jwk, algorithm=loader_alg).key
    except Exception as exc:
        # Untrusted input through a third-party parser: whatever fails, the key is unusable.
        # pyjwt's messages can quote the JWK, so only the exception's type is kept.
        raise _Unusable(f"parameters are not a valid public key ({type(exc).__name__})") from None
    if not isinstance(key, _PUBLIC_KEY_TYPES):
        raise _Unusable("did not load as a public key")
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise _Unusable(f"RSA modulus of {key.key_size} bits is shorter than {MIN_RSA_BITS}")
    return key


def _json_object(document: bytes, what: str) -> dict[str, Any]:
    """Strict JSON: UTF-8, no NaN or Infinity, no duplicate member names, an object."""
    if len(document) > MAX_DOCUMENT_BYTES:
        raise JwksError(f"{what} is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = document.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JwksError(f"{what} is not UTF-8 (invalid byte at offset {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_members, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise JwksError(
            f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise JwksError(f"{what} is not strict JSON: {exc}") from None
    if not isinstance(value, dict):
        raise JwksError(f"{what} is a JSON {_json_type(value)}, not an object")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # With duplicates, which value counts depends on the parser; refuse to guess.
    members: dict[str, Any] = {}
    for name, value in pairs:
        if name in members:
            raise ValueError(f"duplicate member {_short(name)}")
        members[name] = value
    return members


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _json_type(value: object) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _key_label(index: int, jwk: object) -> str:
    kid = jwk.get("kid") if isinstance(jwk, dict) else None
    return f"keys[{index}] (kid {_short(kid)})" if isinstance(kid, str) else f"keys[{index}]"


def _short(value: object, limit: int = 60) -> str:
    """A JSON value from an untrusted document, quoted and cut short for messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- fetching ------------------------------------------------------------------------------


def _require_http_url(url: str, what: str) -> None:
    try:
        parts = urlsplit(url)
        usable = parts.scheme in _HTTP_SCHEMES and bool(parts.hostname)
    except ValueError:
        usable = False
    if not usable:
        raise JwksError(f"{what} must be an http or https URL, not {_redacted(url)}")


def _redacted(url: str) -> str:
    """The URL for logs and messages: without credentials or query values."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparseable URL)"
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(f"{pair.partition('=')[0]}=..." for pair in parts.query.split("&") if pair)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class _HttpRedirectsOnly(urllib.request.HTTPRedirectHandler):
    """Redirects stay on http(s) and never downgrade https to http."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        old_scheme, new_scheme = urlsplit(req.full_url).scheme, urlsplit(newurl).scheme
        if new_scheme not in _HTTP_SCHEMES or (old_scheme, new_scheme) == ("https", "http"):
            fp.close()
            raise JwksError(f"redirect to {_redacted(newurl)} refused: http(s) only, no downgrade")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_HttpRedirectsOnly)


async def _http_get(url: str, timeout_s: float) -> bytes:
    """GET in a worker thread. The thread can outlive the deadline by one socket timeout;
    the caller never waits longer than ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            return await asyncio.to_thread(_blocking_get, url, timeout_s)
    except TimeoutError:
        raise JwksError(f"no complete answer within {timeout_s:g} s") from None


def _blocking_get(url: str, timeout_s: float) -> bytes:
    deadline = time.monotonic() + timeout_s
    # Only http(s) URLs get here (_require_http_url), and redirects stay on http(s).
    request = urllib.request.Request(url, headers=_REQUEST_HEADERS)  # noqa: S310
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            return _read_body(response, deadline, timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        location = exc.headers.get("Location") if 300 <= exc.code < 400 else None
        if location is not None:
            # urllib itself refuses redirects to schemes other than http(s) and ftp.
            raise JwksError(
                f"redirect to {_redacted(location)} refused (HTTP status {exc.code})"
            ) from None
        raise JwksError(f"HTTP status {exc.code}") from None
    except urllib.error.URLError as exc:
        raise JwksError(f"cannot fetch: {_os_reason(exc.reason, timeout_s)}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise JwksError(f"cannot fetch: {_os_reason(exc, timeout_s)}") from None


def _read_body(response: http.client.HTTPResponse, deadline: float, timeout_s: float) -> bytes:
    if response.status != 200:
        raise JwksError(f"HTTP status {response.status}")
    if response.length is not None and response.length > MAX_DOCUMENT_BYTES:
        raise JwksError(f"response is larger than {MAX_DOCUMENT_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    # read1 returns what one socket read brings, so a server trickling bytes cannot hold
    # the thread past the deadline by more than one socket timeout.
    while chunk := response.read1(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_DOCUMENT_BYTES:
            raise JwksError(f"response is larger than {MAX_DOCUMENT_BYTES} bytes")
        if time.monotonic() > deadline:
            raise JwksError(f"no complete answer within {timeout_s:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


def _os_reason(reason: object, timeout_s: float) -> str:
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


async def _fetch_jwks(url: str, timeout_s: float, description: str) -> KeySet:
    try:
        return parse_jwks(await _http_get(url, timeout_s))
    except JwksError as exc:
        raise JwksError(f"{description}: {exc}") from None


# --- sources -------------------------------------------------------------------------------


class JwksSource(Protocol):
    description: str

    async def fetch(self) -> KeySet: ...


class FileJwks:
    """A JWKS file on disk (a mounted secret or config map), read again on every fetch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"jwks_file {path}"

    async def fetch(self) -> KeySet:
        document = await asyncio.to_thread(self._read)
        try:
            return parse_jwks(document)
        except JwksError as exc:
            raise JwksError(f"{self.description}: {exc}") from None

    def _read(self) -> bytes:
        try:
            with self.path.open("rb") as file:
                # One byte more than allowed, so parse_jwks sees an oversized file as such.
                return file.read(MAX_DOCUMENT_BYTES + 1)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise JwksError(f"{self.description}: cannot read: {reason}") from None


class UriJwks:
    """A JWKS served over HTTP(S). Raises :class:`JwksError` for a URL that is not http(s)."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        _require_http_url(url, "jwks_uri")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.url = url
        self.timeout_s = timeout_s
        self.description = f"jwks_uri {_redacted(url)}"

    async def fetch(self) -> KeySet:
        return await _fetch_jwks(self.url, self.timeout_s, self.description)


class OidcDiscoveryJwks:
    """The JWKS an OpenID Provider names in its discovery document.

    Discovery runs on every fetch: it is one small request more, and it follows a provider
    that moves its jwks_uri. Raises :class:`JwksError` for an issuer that is not http(s)."""

    def __init__(self, issuer: str, timeout_s: float = 2.0) -> None:
        _require_http_url(issuer, "issuer")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        self.issuer = issuer
        self.discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        self.timeout_s = timeout_s
        self.description = f"oidc_discovery {_redacted(self.discovery_url)}"

    async def fetch(self) -> KeySet:
        jwks_uri = await self._discover()
        where = f"{self.description}: jwks_uri {_redacted(jwks_uri)}"
        return await _fetch_jwks(jwks_uri, self.timeout_s, where)

    async def _discover(self) -> str:
        try:
            configuration = _json_object(
                await _http_get(self.discovery_url, self.timeout_s), "discovery document"
            )
        except JwksError as exc:
            raise JwksError(f"{self.description}: {exc}") from None
        issuer = configuration.get("issuer")
        if issuer != self.issuer:
            # OpenID Connect Discovery 1.0 §4.3: a document speaking for another issuer
            # would let that issuer's keys vouch for ours (mix-up).
            raise JwksError(
                f"{self.description}: the document's issuer {_short(issuer)} "
                f"is not the configured issuer {self.issuer!r}"
            )
        jwks_uri = configuration.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise JwksError(f'{self.description}: the document has no "jwks_uri" string')
        try:
            _require_http_url(jwks_uri, "jwks_uri")
        except JwksError as exc:
            raise JwksError(f"{self.description}: {exc}") from None
        return jwks_uri


# --- cache ---------------------------------------------------------------------------------


class KeyCache:
    """The key set the verifier reads, refreshed in the background.

    The last good key set keeps serving when a refresh fails. ``last_error`` is the error
    of the latest fetch, None once a fetch succeeds."""

    def __init__(
        self,
        source: JwksSource,
        *,
        refresh_interval_s: float = 300.0,
        min_refetch_interval_s: float = 10.0,
        retry_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.last_error: str | None = None
        self._refresh_interval_s = refresh_interval_s
        self._min_refetch_interval_s = min_refetch_interval_s
        self._retry_interval_s = retry_interval_s
        self._clock = clock
        self._keys: KeySet | None = None
        self._last_fetch_ok = False
        self._last_fetch_at: float | None = None
        self._in_flight: asyncio.Task[None] | None = None
        self._background: asyncio.Task[None] | None = None
        self._loaded = asyncio.Event()

    @property
    def keys(self) -> KeySet | None:
        return self._keys

    @property
    def ready(self) -> bool:
        return self._keys is not None

    async def start(self) -> None:
        """One fetch now (a failure is recorded, not raised), then refreshes in the background."""
        if self._background is not None:
            return
        await self._fetch()
        self._background = asyncio.create_task(
            self._refresh_forever(), name=f"jwks refresh: {self.source.description}"
        )

    async def stop(self) -> None:
        tasks = [task for task in (self._background, self._in_flight) if task is not None]
        self._background = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def refetch_for_unknown_kid(self) -> KeySet | None:
        """Fetch now because a token names a kid we do not know (the provider may have rotated).

        Tokens choose their kid, so anyone can call this at will: concurrent callers share
        one fetch, and there is at most one fetch per ``min_refetch_interval_s``."""
        if not self._fetching() and self._fetched_recently():
            return self._keys
        await self._fetch()
        return self._keys

    async def wait_ready(self, timeout_s: float) -> bool:
        if self.ready:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                await self._loaded.wait()
        except TimeoutError:
            return False
        return True

    async def _refresh_forever(self) -> None:
        while True:
            ok = self._last_fetch_ok
            await asyncio.sleep(self._refresh_interval_s if ok else self._retry_interval_s)
            await self._fetch()

    def _fetching(self) -> bool:
        return self._in_flight is not None and not self._in_flight.done()

    def _fetched_recently(self) -> bool:
        last = self._last_fetch_at
        return last is not None and self._clock() - last < self._min_refetch_interval_s

    async def _fetch(self) -> None:
        """Join the fetch in flight or start one. Shielded: a caller that gives up (its
        request's deadline) must not cancel the fetch the others are waiting for."""
        if self._in_flight is None or self._in_flight.done():
            self._last_fetch_at = self._clock()
            self._in_flight = asyncio.create_task(self._fetch_once())
        await asyncio.shield(self._in_flight)

    async def _fetch_once(self) -> None:
        try:
            keys = await self.source.fetch()
        except Exception as exc:
            # Whatever a source raises, the background refresh must survive it.
            self._record_failure(exc)
        else:
            self._record_success(keys)

    def _record_failure(self, exc: Exception) -> None:
        message = str(exc) if isinstance(exc, JwksError) else f"{type(exc).__name__}: {exc}"
        self.last_error = message
        self._last_fetch_ok = False
        serving = self._keys is not None
        log = _log.warning if serving else _log.error
        log(
            "jwks_refresh_failed",
            source=self.source.description,
            error=message,
            serving_previous_keys=serving,
        )

    def _record_success(self, keys: KeySet) -> None:
        previous, self._keys = self._keys, keys
        self.last_error = None
        self._last_fetch_ok = True
        self._loaded.set()
        changes = _key_changes(previous, keys)
        if changes is not None:
            _log.info("jwks_keys_changed", source=self.source.description, **changes)


def _key_changes(before: KeySet | None, after: KeySet) -> dict[str, list[str]] | None:
    """Kids added, removed, and replaced (same kid, other key or algorithms); None if equal."""
    old = {_fingerprint(key) for key in before.keys} if before is not None else set()
    new = {_fingerprint(key) for key in after.keys}
    if old == new:
        return None
    old_kids = {kid for kid, _, _ in old}
    new_kids = {kid for kid, _, _ in new}
    touched = {kid for kid, _, _ in old ^ new}
    return {
        "kids_added": sorted(touched & (new_kids - old_kids)),
        "kids_removed": sorted(touched & (old_kids - new_kids)),
        "kids_replaced": sorted(touched & old_kids & new_kids),
    }


def _fingerprint(key: VerificationKey) -> tuple[str, tuple[str, ...], bytes]:
    material: bytes = key.key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return (key.kid or "(no kid)", tuple(sorted(key.algorithms)), material)
