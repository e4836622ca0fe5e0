"""JWKS parsing, key sources over a real local HTTP server, and the key cache."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from authz_service.layers.identity import jwks
from authz_service.layers.identity.jwks import (
    FileJwks,
    JwksError,
    KeyCache,
    KeySet,
    OidcDiscoveryJwks,
    UriJwks,
    parse_jwks,
)

FAST = 0.05  # seconds: the cache's intervals in tests
T = TypeVar("T")

# --- keys ----------------------------------------------------------------------------------


@functools.cache
def rsa_key(name: str, bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


@functools.cache
def ec_key(name: str, curve: str = "P-256") -> ec.EllipticCurvePrivateKey:
    curves = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1(), "P-521": ec.SECP521R1()}
    return ec.generate_private_key(curves[curve])


def public_jwk(private_key: Any, kid: str | None, **members: Any) -> dict[str, Any]:
    jwk: dict[str, Any]
    public = private_key.public_key()
    if isinstance(private_key, rsa.RSAPrivateKey):
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(private_key, ec.EllipticCurvePrivateKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    if kid is not None:
        jwk["kid"] = kid
    return jwk | members


def document(*keys: object) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


def rsa_jwks(*kids: str) -> bytes:
    return document(*(public_jwk(rsa_key(kid), kid) for kid in kids))


def kids(keys: KeySet | None) -> list[str | None]:
    assert keys is not None
    return [key.kid for key in keys.keys]


class Recorder:
    """Stands in for the module's structlog logger: keeps (level, event, fields)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def log(event: str, **fields: Any) -> None:
            self.lines.append((level, event, fields))

        return log

    def events(self, level: str | None = None) -> list[str]:
        return [event for lvl, event, _ in self.lines if level in (None, lvl)]


@pytest.fixture
def logs(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(jwks, "_log", recorder)
    return recorder


# --- a local identity provider -------------------------------------------------------------


@dataclass
class Answer:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class IdentityProvider:
    """A real HTTP server on 127.0.0.1 whose answers the test changes while it runs."""

    def __init__(self) -> None:
        self.answers: dict[str, Answer] = {}
        self.requests: Counter[str] = Counter()
        self.released = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        self.running = True

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, body: bytes, **options: Any) -> None:
        self.answers[path] = Answer(body, **options)

    def count(self, path: str) -> int:
        with self._lock:
            return self.requests[path]

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.released.set()
            self._server.shutdown()
            self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with provider._lock:
                    provider.requests[self.path] += 1
                answer = provider.answers.get(self.path, Answer(b"not found", 404, "text/plain"))
                if answer.delay_s and provider.released.wait(answer.delay_s):
                    return
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    provider = IdentityProvider()
    yield provider
    provider.stop()


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


async def eventually(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- parse_jwks: algorithm families --------------------------------------------------------


def test_rsa_key_verifies_rsa_algorithms_only() -> None:
    keys = parse_jwks(rsa_jwks("r1"))
    (key,) = keys.keys
    assert key.algorithms == {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
    assert keys.find("r1", "RS256") is key
    assert keys.find("r1", "PS512") is key
    for alg in ("ES256", "HS256", "EdDSA", "none"):
        assert keys.find("r1", alg) is None


def test_found_key_verifies_a_real_token_with_pyjwt() -> None:
    keys = parse_jwks(rsa_jwks("r1"))
    token = jwt.encode({"sub": "alice"}, rsa_key("r1"), algorithm="PS256", headers={"kid": "r1"})
    found = keys.find("r1", "PS256")
    assert found is not None
    assert jwt.decode(token, key=found.key, algorithms=["PS256"])["sub"] == "alice"


@pytest.mark.parametrize(
    ("curve", "alg"), [("P-256", "ES256"), ("P-384", "ES384"), ("P-521", "ES512")]
)
def test_ec_key_verifies_exactly_the_algorithm_of_its_curve(curve: str, alg: str) -> None:
    keys = parse_jwks(document(public_jwk(ec_key("e", curve), "e1")))
    assert keys.keys[0].algorithms == {alg}
    for other in ("ES256", "ES384", "ES512", "RS256", "HS256"):
        assert (keys.find("e1", other) is not None) == (other == alg)


def test_ec_token_verifies_with_found_key() -> None:
    keys = parse_jwks(document(public_jwk(ec_key("e"), "e1")))
    token = jwt.encode({"sub": "bob"}, ec_key("e"), algorithm="ES256")
    found = keys.find("e1", "ES256")
    assert found is not None
    assert jwt.decode(token, key=found.key, algorithms=["ES256"])["sub"] == "bob"


def test_okp_keys_verify_eddsa() -> None:
    ed1 = public_jwk(ed25519.Ed25519PrivateKey.generate(), "ed25519")
    ed2 = public_jwk(ed448.Ed448PrivateKey.generate(), "ed448")
    x25519 = {"kty": "OKP", "crv": "X25519", "x": ed1["x"], "kid": "x"}
    keys = parse_jwks(document(ed1, ed2, x25519))
    assert kids(keys) == ["ed25519", "ed448"]
    assert all(key.algorithms == {"EdDSA"} for key in keys.keys)


def test_symmetric_key_is_skipped_with_a_warning(logs: Recorder) -> None:
    oct_key = {"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ", "kid": "h1", "alg": "HS256"}
    keys = parse_jwks(document(oct_key, public_jwk(rsa_key("r1"), "r1")))
    assert kids(keys) == ["r1"]
    assert keys.find("h1", "HS256") is None
    assert keys.find("r1", "HS256") is None
    assert "jwks_key_skipped" in logs.events("warning")
    with pytest.raises(JwksError, match=r"no usable signature key.*shared secret"):
        parse_jwks(document(oct_key))


def test_alg_member_restricts_the_key_to_that_algorithm() -> None:
    keys = parse_jwks(document(public_jwk(rsa_key("r1"), "r1", alg="PS256")))
    assert keys.keys[0].algorithms == {"PS256"}
    assert keys.find("r1", "RS256") is None


@pytest.mark.parametrize("alg", ["HS256", "ES256", "EdDSA", "none", 7])
def test_alg_member_outside_the_family_skips_the_key(alg: object) -> None:
    good = public_jwk(rsa_key("r2"), "r2")
    keys = parse_jwks(document(public_jwk(rsa_key("r1"), "r1", alg=alg), good))
    assert kids(keys) == ["r2"]


def test_ec_key_with_alg_of_another_curve_is_skipped() -> None:
    with pytest.raises(JwksError, match="ES384"):
        parse_jwks(document(public_jwk(ec_key("e"), "e1", alg="ES384")))


def test_keys_not_for_signatures_are_skipped() -> None:
    keys = parse_jwks(
        document(
            public_jwk(rsa_key("r1"), "enc", use="enc"),
            public_jwk(rsa_key("r1"), "wrap", key_ops=["wrapKey"]),
            public_jwk(rsa_key("r2"), "sig", use="sig", key_ops=["verify"]),
        )
    )
    assert kids(keys) == ["sig"]


@pytest.mark.parametrize("key", [rsa_key("r1"), ec_key("e"), ed25519.Ed25519PrivateKey.generate()])
def test_published_private_key_is_skipped_with_a_warning(logs: Recorder, key: Any) -> None:
    if isinstance(key, rsa.RSAPrivateKey):
        private = RSAAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        private = ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        private = OKPAlgorithm.to_jwk(key, as_dict=True)
    private["kid"] = "leaked"
    keys = parse_jwks(document(private, public_jwk(rsa_key("r2"), "r2")))
    assert kids(keys) == ["r2"]
    assert [f["reason"] for lvl, e, f in logs.lines if lvl == "warning"] == [
        "publishes private key material; a JWKS holds public keys"
    ]
    with pytest.raises(JwksError, match="private key material") as raised:
        parse_jwks(document(private))
    assert private["d"] not in str(raised.value)


def test_short_rsa_key_is_skipped() -> None:
    with pytest.raises(JwksError, match="1024 bits is shorter than 2048"):
        parse_jwks(document(public_jwk(rsa_key("weak", 1024), "weak")))


def test_duplicate_kid_keeps_the_first(logs: Recorder) -> None:
    first, second = public_jwk(rsa_key("r1"), "same"), public_jwk(ec_key("e"), "same")
    keys = parse_jwks(document(first, second))
    assert kids(keys) == ["same"]
    assert keys.find("same", "RS256") is not None
    assert keys.find("same", "ES256") is None
    assert "jwks_duplicate_kid" in logs.events("warning")


def test_malformed_keys_are_skipped_without_quoting_key_material() -> None:
    good = public_jwk(rsa_key("r1"), "good")
    bad_n = public_jwk(rsa_key("r2"), "bad-n") | {"n": "!!not-base64!!secretish"}
    keys = parse_jwks(
        document(
            "a string",
            {"kid": "no-kty"},
            {"kty": "RSA", "kid": 5, "n": good["n"], "e": good["e"]},
            {"kty": "EC", "crv": ["P-256"], "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
            {"kty": "EC", "crv": "P-256", "x": 1, "y": 2, "kid": "ints"},
            bad_n,
            good,
        )
    )
    assert kids(keys) == ["good"]
    with pytest.raises(JwksError) as raised:
        parse_jwks(document(bad_n))
    assert "secretish" not in str(raised.value)


def test_find_without_kid_needs_exactly_one_candidate() -> None:
    keys = parse_jwks(document(public_jwk(rsa_key("r1"), "r1"), public_jwk(ec_key("e"), None)))
    ec_found = keys.find(None, "ES256")
    assert ec_found is not None and ec_found.kid is None
    rsa_found = keys.find(None, "RS256")
    assert rsa_found is not None and rsa_found.kid == "r1"
    assert keys.find("e1", "ES256") is None  # a token's kid never matches a key without one

    two_rsa = parse_jwks(rsa_jwks("r1", "r2"))
    assert two_rsa.find(None, "RS256") is None
    assert two_rsa.find(None, "ES256") is None


# --- parse_jwks: the document --------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<html><body>Sign in</body></html>", "not JSON"),
        (b"[]", "JSON array, not an object"),
        (b'"keys"', "JSON string, not an object"),
        (b"{}", 'no "keys" array'),
        (b'{"keys": {"kty": "RSA"}}', 'no "keys" array'),
        (b'{"keys": []}', "keys array is empty"),
        (b'{"keys": [], "keys": []}', "duplicate member 'keys'"),
        (b'{"keys": [NaN]}', "NaN is not a JSON number"),
        (b'{"keys": [], "x": "\xff"}', "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "not strict JSON"),
        (b'{"keys": [], "pad": "' + b"x" * (1024 * 1024) + b'"}', "larger than 1048576 bytes"),
    ],
)
def test_bad_documents_are_refused(body: bytes, problem: str) -> None:
    with pytest.raises(JwksError, match=problem):
        parse_jwks(body)


# --- sources -------------------------------------------------------------------------------


def test_file_source(tmp_path: Path) -> None:
    file = tmp_path / "jwks.json"
    file.write_bytes(rsa_jwks("r1"))
    source = FileJwks(file)
    assert kids(run(source.fetch())) == ["r1"]
    file.write_bytes(b"[]")
    with pytest.raises(JwksError, match=r"jwks_file .*jwks\.json: JWKS is a JSON array"):
        run(source.fetch())
    with pytest.raises(JwksError, match=r"missing\.json: cannot read: No such file"):
        run(FileJwks(tmp_path / "missing.json").fetch())


def test_uri_source(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"), content_type="application/jwk-set+json")
    assert kids(run(UriJwks(idp.url("/jwks")).fetch())) == ["r1"]


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Answer(b"oops", 500, "text/plain"), "HTTP status 500"),
        (Answer(b"", 204), "HTTP status 204"),
        (Answer(b"<html>login</html>", 200, "text/html"), "JWKS is not JSON"),
        (Answer(b"[1, 2]"), "JWKS is a JSON array"),
        (Answer(b'{"keys": "r1"}'), 'no "keys" array'),
        (Answer(b"x" * (1024 * 1024 + 1)), "larger than 1048576 bytes"),
    ],
)
def test_uri_source_errors_name_the_url(
    idp: IdentityProvider, answer: Answer, problem: str
) -> None:
    idp.answers["/jwks"] = answer
    with pytest.raises(JwksError, match=problem) as raised:
        run(UriJwks(idp.url("/jwks")).fetch())
    assert str(raised.value).startswith(f"jwks_uri {idp.url('/jwks')}: ")


def test_uri_source_connection_refused(idp: IdentityProvider) -> None:
    url = idp.url("/jwks")
    idp.stop()
    with pytest.raises(JwksError, match="cannot fetch: Connection refused") as raised:
        run(UriJwks(url).fetch())
    assert url in str(raised.value)


def test_slow_uri_source_times_out_without_blocking_the_loop(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"), delay_s=5.0)
    source = UriJwks(idp.url("/jwks"), timeout_s=0.3)

    async def fetch_while_ticking() -> tuple[str, int, float]:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.01)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        try:
            await source.fetch()
        except JwksError as exc:
            message = str(exc)
        else:
            message = "no error"
        elapsed = time.monotonic() - started
        done.set()
        await ticking
        return message, ticks, elapsed

    message, ticks, elapsed = run(fetch_while_ticking())
    assert "no answer within 0.3 s" in message or "no complete answer within 0.3 s" in message
    assert elapsed < 1.0
    assert ticks >= 10  # the loop ran other tasks the whole time


def test_uri_source_refuses_other_schemes() -> None:
    for url in ("file:///etc/passwd", "ftp://idp.example/jwks", "jwks.json", "http://"):
        with pytest.raises(JwksError, match="must be an http or https URL"):
            UriJwks(url)


def test_redirects_are_followed_on_http_only(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    idp.serve("/moved", b"", status=302, headers={"Location": "/jwks"})
    assert kids(run(UriJwks(idp.url("/moved")).fetch())) == ["r1"]
    for target in ("file:///etc/passwd", "ftp://127.0.0.1/jwks"):
        idp.serve("/moved", b"", status=302, headers={"Location": target})
        with pytest.raises(JwksError, match=re.escape(f"redirect to {target} refused")):
            run(UriJwks(idp.url("/moved")).fetch())


def test_urls_in_messages_lose_credentials_and_query_values() -> None:
    source = UriJwks("https://user:pw@idp.example/jwks?api_key=s3cret&v=2")
    assert source.description == "jwks_uri https://idp.example/jwks?api_key=...&v=..."


def discovery(issuer: str, jwks_uri: str) -> bytes:
    return json.dumps({"issuer": issuer, "jwks_uri": jwks_uri}).encode()


@pytest.mark.parametrize("suffix", ["", "/"])
def test_oidc_discovery(idp: IdentityProvider, suffix: str) -> None:
    issuer = idp.url("/realm") + suffix
    idp.serve("/realm/.well-known/openid-configuration", discovery(issuer, idp.url("/certs")))
    idp.serve("/certs", rsa_jwks("r1"))
    source = OidcDiscoveryJwks(issuer)
    assert kids(run(source.fetch())) == ["r1"]

    # Discovery runs on every fetch, so a moved jwks_uri is followed.
    idp.serve("/realm/.well-known/openid-configuration", discovery(issuer, idp.url("/v2/certs")))
    idp.serve("/v2/certs", rsa_jwks("r2"))
    assert kids(run(source.fetch())) == ["r2"]
    assert idp.count("/realm/.well-known/openid-configuration") == 2


@pytest.mark.parametrize(
    ("configured", "published"),
    [("/realm", "/other"), ("/realm", "/realm/"), ("/realm/", "/realm")],
)
def test_oidc_discovery_refuses_another_issuer(
    idp: IdentityProvider, configured: str, published: str
) -> None:
    idp.serve(
        "/realm/.well-known/openid-configuration",
        discovery(idp.url(published), idp.url("/certs")),
    )
    idp.serve("/certs", rsa_jwks("r1"))
    with pytest.raises(JwksError, match="is not the configured issuer"):
        run(OidcDiscoveryJwks(idp.url(configured)).fetch())
    assert idp.count("/certs") == 0


@pytest.mark.parametrize(
    ("configuration", "problem"),
    [
        ({"jwks_uri": "file:///etc/jwks.json"}, "jwks_uri must be an http or https URL"),
        ({}, 'no "jwks_uri" string'),
        ({"jwks_uri": ["http://x"]}, 'no "jwks_uri" string'),
    ],
)
def test_oidc_discovery_needs_an_http_jwks_uri(
    idp: IdentityProvider, configuration: dict[str, Any], problem: str
) -> None:
    issuer = idp.url("/realm")
    idp.serve(
        "/realm/.well-known/openid-configuration",
        json.dumps({"issuer": issuer} | configuration).encode(),
    )
    with pytest.raises(JwksError, match=problem):
        run(OidcDiscoveryJwks(issuer).fetch())


def test_oidc_discovery_errors(idp: IdentityProvider) -> None:
    issuer = idp.url("/realm")
    with pytest.raises(JwksError, match="openid-configuration: HTTP status 404"):
        run(OidcDiscoveryJwks(issuer).fetch())
    idp.serve("/realm/.well-known/openid-configuration", b"[]")
    with pytest.raises(JwksError, match="discovery document is a JSON array"):
        run(OidcDiscoveryJwks(issuer).fetch())
    idp.serve("/realm/.well-known/openid-configuration", discovery(issuer, idp.url("/certs")))
    with pytest.raises(JwksError, match=r"jwks_uri http://[^ ]+/certs: HTTP status 404"):
        run(OidcDiscoveryJwks(issuer).fetch())


# --- KeyCache ------------------------------------------------------------------------------


def cache_for(idp: IdentityProvider, **options: Any) -> KeyCache:
    intervals = {"refresh_interval_s": 60.0, "retry_interval_s": 60.0}
    return KeyCache(UriJwks(idp.url("/jwks"), timeout_s=0.5), **(intervals | options))


def test_cache_loads_on_start_and_picks_up_rotation_in_the_background(
    idp: IdentityProvider, logs: Recorder
) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    cache = cache_for(idp, refresh_interval_s=FAST)

    async def scenario() -> None:
        assert not cache.ready and cache.keys is None
        await cache.start()
        assert cache.ready and kids(cache.keys) == ["r1"]
        assert await cache.wait_ready(0.01)
        idp.serve("/jwks", rsa_jwks("r2", "r3"))
        await eventually(lambda: kids(cache.keys) == ["r2", "r3"])
        await cache.stop()

    run(scenario())
    changes = [fields for _, event, fields in logs.lines if event == "jwks_keys_changed"]
    assert changes[0]["kids_added"] == ["r1"]
    assert changes[1] == {
        "source": f"jwks_uri {idp.url('/jwks')}",
        "kids_added": ["r2", "r3"],
        "kids_removed": ["r1"],
        "kids_replaced": [],
    }


def test_unchanged_refresh_logs_nothing_and_replaced_key_is_logged(
    idp: IdentityProvider, logs: Recorder
) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    cache = cache_for(idp, min_refetch_interval_s=0)

    async def scenario() -> None:
        await cache.start()
        await cache.refetch_for_unknown_kid()
        idp.serve("/jwks", document(public_jwk(rsa_key("other"), "r1")))
        await cache.refetch_for_unknown_kid()
        await cache.stop()

    run(scenario())
    changes = [fields for _, event, fields in logs.lines if event == "jwks_keys_changed"]
    assert len(changes) == 2
    assert changes[1]["kids_replaced"] == ["r1"]


def test_refetch_for_unknown_kid_finds_a_rotated_key(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    clock = FakeClock()
    cache = cache_for(idp, clock=clock)

    async def scenario() -> KeySet | None:
        await cache.start()
        idp.serve("/jwks", rsa_jwks("r1", "r2"))
        clock.now += 10.0
        refreshed = await cache.refetch_for_unknown_kid()
        await cache.stop()
        return refreshed

    refreshed = run(scenario())
    assert refreshed is not None and refreshed.find("r2", "RS256") is not None
    assert cache.keys is refreshed


def test_refetch_for_unknown_kid_is_rate_limited(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    clock = FakeClock()
    cache = cache_for(idp, min_refetch_interval_s=10.0, clock=clock)

    async def scenario() -> None:
        await cache.start()
        assert idp.count("/jwks") == 1
        idp.serve("/jwks", rsa_jwks("r2"))
        # The start fetch counts: an unknown kid right after it does not fetch again.
        for _ in range(100):
            assert kids(await cache.refetch_for_unknown_kid()) == ["r1"]
        clock.now += 9.9
        assert kids(await cache.refetch_for_unknown_kid()) == ["r1"]
        assert idp.count("/jwks") == 1
        clock.now += 0.1
        for _ in range(100):
            assert kids(await cache.refetch_for_unknown_kid()) == ["r2"]
        assert idp.count("/jwks") == 2
        await cache.stop()

    run(scenario())


def test_concurrent_refetches_share_one_fetch(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    # No rate limit: only single-flight can keep the 50 callers to one fetch.
    cache = cache_for(idp, min_refetch_interval_s=0)

    async def scenario() -> None:
        await cache.start()
        idp.serve("/jwks", rsa_jwks("r2"), delay_s=0.1)
        results = await asyncio.gather(*(cache.refetch_for_unknown_kid() for _ in range(50)))
        assert all(kids(result) == ["r2"] for result in results)
        assert idp.count("/jwks") == 2
        await cache.refetch_for_unknown_kid()
        assert idp.count("/jwks") == 3
        await cache.stop()

    run(scenario())


def test_caller_giving_up_does_not_cancel_the_shared_fetch(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    cache = cache_for(idp, min_refetch_interval_s=0)

    async def scenario() -> None:
        await cache.start()
        idp.serve("/jwks", rsa_jwks("r2"), delay_s=0.1)
        impatient = asyncio.create_task(cache.refetch_for_unknown_kid())
        patient = asyncio.create_task(cache.refetch_for_unknown_kid())
        await asyncio.sleep(0.02)
        impatient.cancel()
        assert kids(await patient) == ["r2"]
        await cache.stop()

    run(scenario())


def test_identity_provider_down_keeps_last_good_keys(idp: IdentityProvider, logs: Recorder) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    cache = cache_for(idp, min_refetch_interval_s=0, refresh_interval_s=FAST, retry_interval_s=FAST)

    async def scenario() -> None:
        await cache.start()
        good = cache.keys
        idp.stop()
        assert await cache.refetch_for_unknown_kid() is good
        assert cache.last_error is not None and "Connection refused" in cache.last_error
        await eventually(lambda: logs.events().count("jwks_refresh_failed") >= 3)
        assert cache.ready and cache.keys is good
        await cache.stop()

    run(scenario())
    failure = next(f for lvl, e, f in logs.lines if e == "jwks_refresh_failed")
    assert failure["source"].startswith("jwks_uri http://127.0.0.1:")
    assert "Connection refused" in failure["error"]
    assert failure["serving_previous_keys"] is True


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        (Answer(b"<html>maintenance</html>", 200, "text/html"), "not JSON"),
        (Answer(b"[]"), "JSON array"),
        (Answer(b'{"keys": 1}'), '"keys" array'),
        (Answer(b"down", 500, "text/plain"), "HTTP status 500"),
        (Answer(rsa_jwks("late"), delay_s=2.0), "within 0.2 s"),
    ],
)
def test_garbage_or_slow_refresh_keeps_last_good_keys(
    idp: IdentityProvider, answer: Answer, problem: str
) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    cache = KeyCache(
        UriJwks(idp.url("/jwks"), timeout_s=0.2),
        refresh_interval_s=60.0,
        min_refetch_interval_s=0,
    )

    async def scenario() -> None:
        await cache.start()
        good = cache.keys
        idp.answers["/jwks"] = answer
        assert await cache.refetch_for_unknown_kid() is good
        assert cache.last_error is not None and problem in cache.last_error
        assert cache.keys is good
        idp.released.set()  # let a delayed handler go
        idp.serve("/jwks", rsa_jwks("r2"))
        assert kids(await cache.refetch_for_unknown_kid()) == ["r2"]
        assert cache.last_error is None
        await cache.stop()

    run(scenario())


def test_failed_start_retries_until_ready(idp: IdentityProvider, logs: Recorder) -> None:
    idp.serve("/jwks", b"", status=503)
    cache = cache_for(idp, retry_interval_s=FAST)

    async def scenario() -> None:
        await cache.start()
        assert not cache.ready and cache.keys is None
        assert cache.last_error is not None and "HTTP status 503" in cache.last_error
        assert not await cache.wait_ready(0.01)
        assert await cache.refetch_for_unknown_kid() is None
        idp.serve("/jwks", rsa_jwks("r1"))
        assert await cache.wait_ready(2.0)
        assert kids(cache.keys) == ["r1"] and cache.last_error is None
        await cache.stop()

    run(scenario())
    assert "jwks_refresh_failed" in logs.events("error")


def test_stop_ends_background_refreshes(idp: IdentityProvider) -> None:
    idp.serve("/jwks", rsa_jwks("r1"))
    cache = cache_for(idp, refresh_interval_s=FAST)

    async def scenario() -> None:
        await cache.start()
        await eventually(lambda: idp.count("/jwks") >= 2)
        await cache.stop()
        stopped_at = idp.count("/jwks")
        await asyncio.sleep(4 * FAST)
        assert idp.count("/jwks") == stopped_at

    run(scenario())


def test_cache_survives_a_source_that_raises_anything() -> None:
    class Broken:
        description = "broken source"

        async def fetch(self) -> KeySet:
            raise RuntimeError("bug")

    cache = KeyCache(Broken(), retry_interval_s=FAST)

    async def scenario() -> None:
        await cache.start()
        assert cache.last_error == "RuntimeError: bug"
        await asyncio.sleep(3 * FAST)
        assert cache._background is not None and not cache._background.done()
        await cache.stop()

    run(scenario())
