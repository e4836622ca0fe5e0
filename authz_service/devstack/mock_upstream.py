"""Mock inference upstreams for the demo stack and the end-to-end tests.

One process can pretend to be several providers, each on its own port. The backends are fragile
on purpose: like a careless Flask app they answer malformed input with an HTML 500 page, which
is exactly what the authz service's syntax layer is meant to keep away from them.

Run ``python -m authz_service.devstack.mock_upstream --provider hosted=127.0.0.1:18080`` or call
:func:`start` in-process. Routes live in :data:`DEFAULT_ROUTES`; add features by appending
:class:`Route` entries and passing them to :func:`start`.

With ``--idp-keys DIR`` (``start(..., idp_keys=DIR)``) every provider port is also an OIDC
identity provider whose issuer is its own base URL: a discovery document, the public JWK set of
:mod:`authz_service.devstack.idp`, and test controls to rotate keys and to make the provider
fail (``/__idp/rotate``, ``/__idp/mode``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import json
import logging
import math
import random
import signal
import socket
import socketserver
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import Message
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

from authz_service.devstack import idp

_log = logging.getLogger(__name__)

# Generous for images, small enough that a runaway client cannot exhaust the test machine.
MAX_BODY_BYTES = 32 * 1024 * 1024
_MAX_LINE = 64 * 1024

DEFAULT_TOP_K = 5
LABELS = (
    "tabby cat", "golden retriever", "red fox", "espresso", "sports car", "mountain bike",
    "lighthouse", "sunflower", "jellyfish", "grand piano", "hot air balloon", "pizza",
    "laptop", "volcano", "garden snail",
)  # fmt: skip

# Werkzeug's stock page, byte for byte, so clients see what a crashed Flask backend returns.
FLASK_500_HTML = (
    b"<!doctype html>\n<html lang=en>\n<title>500 Internal Server Error</title>\n"
    b"<h1>Internal Server Error</h1>\n<p>The server encountered an internal error and was "
    b"unable to complete your request. Either the server is overloaded or there is an error "
    b"in the application.</p>\n"
)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Zero-length IEND chunk including its CRC: every complete PNG ends with these 12 bytes.
_PNG_IEND = b"\x00\x00\x00\x00IEND\xaeB`\x82"


class MalformedInput(Exception):
    """Raised by handlers on bad input; the dispatcher turns it into the Flask-style 500."""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lowercased names, repeated headers joined with ", "
    body: bytes


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def json_response(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload).encode())


class ProviderState:
    """Per-provider counters and failure injection, shared by that provider's handler threads."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.base_url = ""  # http://HOST:PORT, known once the server is bound
        self._lock = threading.Lock()
        self._requests: Counter[str] = Counter()
        self._failure_rate = 0.0
        self._rng = random.Random()  # noqa: S311 - failure injection, not security

    def record(self, path: str) -> None:
        with self._lock:
            self._requests[path] += 1

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()

    @property
    def failure_rate(self) -> float:
        with self._lock:
            return self._failure_rate

    @failure_rate.setter
    def failure_rate(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"failure rate must be within [0, 1], got {rate}")
        with self._lock:
            self._failure_rate = rate

    def should_fail(self) -> bool:
        with self._lock:
            # random() is in [0, 1), so rate 1 always fails and rate 0 never does.
            return self._rng.random() < self._failure_rate


Handler = Callable[[Request, ProviderState], Response]


@dataclass(frozen=True)
class Route:
    path: str
    handler: Handler
    methods: frozenset[str] | None = None  # None accepts any method
    subpaths: bool = False  # also match path + "/anything"

    def matches(self, path: str) -> bool:
        return path == self.path or (self.subpaths and path.startswith(self.path + "/"))


# ---------------------------------------------------------------------------------------------
# Inference handlers


def _content(request: Request) -> bytes:
    """The body with a gzip Content-Encoding undone, as a WSGI middleware would; anything
    undecodable is malformed input (a 500, like the rest)."""
    if request.headers.get("content-encoding", "").strip().lower() != "gzip":
        return request.body
    try:
        return gzip.decompress(request.body)
    except (OSError, EOFError, zlib.error) as exc:
        raise MalformedInput(f"invalid gzip body: {exc}") from exc


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise MalformedInput(f"invalid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise MalformedInput("JSON body is not an object")
    return payload


def chat_completions(request: Request, provider: ProviderState) -> Response:
    payload = _json_object(_content(request))
    model = payload.get("model")
    messages = payload.get("messages")
    if not isinstance(model, str) or not model:
        raise MalformedInput("model must be a non-empty string")
    if not isinstance(messages, list) or not messages:
        raise MalformedInput("messages must be a non-empty list")
    prompt_chars = 0
    for message in messages:
        if not isinstance(message, dict):
            raise MalformedInput("message is not an object")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise MalformedInput("message role and content must be strings")
        prompt_chars += len(content)
    reply = (
        f"Mock reply from {provider.name} ({model}): received {len(messages)} message(s), "
        f"{prompt_chars} characters."
    )
    prompt_tokens = math.ceil(prompt_chars / 4)
    completion_tokens = math.ceil(len(reply) / 4)
    return json_response(
        200,
        {
            "id": "chatcmpl-" + hashlib.sha256(request.body).hexdigest()[:24],
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": f"mock-{provider.name}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply},
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def _header_param(value: str, param: str) -> str | None:
    message = Message()
    message["content-type"] = value
    raw = message.get_param(param)
    return None if raw is None else collapse_rfc2231_value(raw)


def _media_type(value: str) -> str:
    message = Message()
    message["content-type"] = value or "application/octet-stream"
    return message.get_content_type()


def _multipart_fields(content_type: str, body: bytes) -> dict[str, bytes]:
    """Split a multipart/form-data body into {field name: raw bytes} (RFC 7578)."""
    boundary = _header_param(content_type, "boundary")
    if not boundary:
        raise MalformedInput("multipart body without boundary")
    # Prefixing CRLF makes the first delimiter look like every later one.
    chunks = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("latin-1"))
    if len(chunks) < 3 or not chunks[-1].startswith(b"--"):
        raise MalformedInput("multipart body without parts or closing delimiter")
    fields: dict[str, bytes] = {}
    for chunk in chunks[1:-1]:
        padding, crlf, part = chunk.partition(b"\r\n")
        if not crlf or padding.strip(b" \t"):
            raise MalformedInput("garbage after multipart delimiter")
        if part.startswith(b"\r\n"):
            raw_headers, content = b"", part[2:]
        else:
            raw_headers, separator, content = part.partition(b"\r\n\r\n")
            if not separator:
                raise MalformedInput("multipart part without header terminator")
        disposition = ""
        for line in raw_headers.decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() == "content-disposition":
                disposition = value.strip()
        # Content-Disposition parameters share Content-Type's syntax, so reuse its parser.
        field_name = _header_param(disposition, "name")
        if field_name:
            fields[field_name] = content
    return fields


def _parse_top_k(value: object) -> int:
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError as exc:
            raise MalformedInput("top_k is not an integer") from exc
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10:
        raise MalformedInput("top_k must be an integer within [1, 10]")
    return value


def image_format(data: bytes) -> str:
    """Name the image format from its magic number; raise MalformedInput if not a whole image."""
    if data.startswith(_PNG_SIGNATURE):
        if not data.endswith(_PNG_IEND):
            raise MalformedInput("truncated PNG (no IEND chunk)")
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        if not data.endswith(b"\xff\xd9"):
            raise MalformedInput("truncated JPEG (no EOI marker)")
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    raise MalformedInput("not a PNG/JPEG/GIF/WebP/BMP/TIFF image")


def predictions(image: bytes, top_k: int) -> list[dict[str, object]]:
    """Softmax-looking scores that depend only on the image bytes."""
    rng = random.Random(hashlib.sha256(image).digest())  # noqa: S311 - determinism, not security
    weights = [rng.random() ** 3 for _ in LABELS]
    total = sum(weights)
    ranked = sorted(zip(LABELS, weights, strict=True), key=lambda item: item[1], reverse=True)
    return [{"label": label, "score": round(weight / total, 4)} for label, weight in ranked[:top_k]]


def classify(request: Request, provider: ProviderState) -> Response:
    content_type = request.headers.get("content-type", "")
    media_type = _media_type(content_type)
    top_k: object = DEFAULT_TOP_K
    body = _content(request)
    if media_type == "application/json":
        payload = _json_object(body)
        encoded = payload.get("image")
        if not isinstance(encoded, str):
            raise MalformedInput("image must be a base64 string")
        try:
            image = base64.b64decode(encoded, validate=True)
        except ValueError as exc:
            raise MalformedInput("invalid base64 image") from exc
        top_k = payload.get("top_k", DEFAULT_TOP_K)
    elif media_type == "multipart/form-data":
        fields = _multipart_fields(content_type, body)
        if "image" not in fields:
            raise MalformedInput("multipart body without an image field")
        image = fields["image"]
        if "top_k" in fields:
            top_k = fields["top_k"].decode("latin-1")
    elif media_type.startswith("image/"):
        image = body
        top_k = parse_qs(request.query).get("top_k", [DEFAULT_TOP_K])[-1]
    else:
        raise MalformedInput(f"unsupported content type {media_type}")
    image_format(image)
    return json_response(
        200, {"provider": provider.name, "predictions": predictions(image, _parse_top_k(top_k))}
    )


# ---------------------------------------------------------------------------------------------
# Diagnostic and control handlers


def echo(request: Request, provider: ProviderState) -> Response:
    return json_response(
        200,
        {
            "provider": provider.name,
            "method": request.method,
            "path": request.path,
            "query": request.query,
            "headers": request.headers,
            "body_length": len(request.body),
            "body_sha256": hashlib.sha256(request.body).hexdigest(),
        },
    )


def get_stats(request: Request, provider: ProviderState) -> Response:
    return json_response(200, {"provider": provider.name, "requests": provider.request_counts()})


def reset_stats(request: Request, provider: ProviderState) -> Response:
    provider.reset_counts()
    return get_stats(request, provider)


def set_failure_rate(request: Request, provider: ProviderState) -> Response:
    values = parse_qs(request.query).get("rate", [])
    try:
        # float() accepts "nan", which the range check below rejects.
        provider.failure_rate = float(values[-1])
    except (IndexError, ValueError):
        return json_response(400, {"error": "rate must be a number within [0, 1]"})
    return json_response(200, {"provider": provider.name, "failure_rate": provider.failure_rate})


def _methods(*names: str) -> frozenset[str]:
    return frozenset(names)


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route("/v1/chat/completions", chat_completions, _methods("POST")),
    Route("/v1/classify", classify, _methods("POST")),
    Route("/echo", echo, subpaths=True),
    Route("/__stats", get_stats, _methods("GET")),
    Route("/__stats", reset_stats, _methods("DELETE")),
    Route("/__fail", set_failure_rate, _methods("POST")),
)

_FAILURE_PREFIX = "/v1/"

# ---------------------------------------------------------------------------------------------
# Identity provider

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/.well-known/jwks.json"
IDP_MODES = ("ok", "down", "slow", "garbage")
IDP_SLOW_S = 3.0
# Lets verifiers cache the key set; those that honour it see a rotation within a minute.
JWKS_CACHE_CONTROL = "max-age=60"
_CLAIMS_SUPPORTED = (
    "iss", "sub", "aud", "exp", "iat", "nbf", "roles", "scope", idp.TIER_CLAIM, idp.TENANT_CLAIM,
)  # fmt: skip


class _IdentityProvider:
    """The OIDC endpoints of one start(): every provider port publishes the same key set."""

    def __init__(self, keys: Path) -> None:
        self.keys = keys
        self._lock = threading.Lock()
        self._modes: dict[str, str] = {}  # per provider: each port is its own issuer

    def mode(self, provider: ProviderState) -> str:
        with self._lock:
            return self._modes.get(provider.name, "ok")

    def _failure(self, provider: ProviderState) -> Response | None:
        mode = self.mode(provider)
        if mode == "down":
            return json_response(503, {"error": "identity provider down"})
        if mode == "garbage":
            return Response(200, b"<html>oops</html>", "text/html")
        if mode == "slow":
            time.sleep(IDP_SLOW_S)
        return None

    def discovery(self, request: Request, provider: ProviderState) -> Response:
        if failure := self._failure(provider):
            return failure
        base = provider.base_url
        return json_response(
            200,
            {
                "issuer": base,
                "jwks_uri": base + JWKS_PATH,
                # Required by OIDC Discovery but not served: the demo mints tokens offline.
                "authorization_endpoint": base + "/authorize",
                "response_types_supported": ["id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": idp.signing_algorithms(self.keys),
                "claims_supported": list(_CLAIMS_SUPPORTED),
            },
        )

    def jwks(self, request: Request, provider: ProviderState) -> Response:
        if failure := self._failure(provider):
            return failure
        return Response(
            200,
            json.dumps(idp.public_jwks(self.keys)).encode(),
            headers=(("cache-control", JWKS_CACHE_CONTROL),),
        )

    def rotate(self, request: Request, provider: ProviderState) -> Response:
        values = parse_qs(request.query).get("keep_old", ["1"])
        if values[-1] not in ("0", "1"):
            return json_response(400, {"error": "keep_old must be 0 or 1"})
        return json_response(200, {"kid": idp.rotate_keys(self.keys, keep_old=values[-1] == "1")})

    def set_mode(self, request: Request, provider: ProviderState) -> Response:
        values = parse_qs(request.query).get("mode", [])
        if not values or values[-1] not in IDP_MODES:
            return json_response(400, {"error": f"mode must be one of {', '.join(IDP_MODES)}"})
        with self._lock:
            self._modes[provider.name] = values[-1]
        return json_response(200, {"provider": provider.name, "mode": values[-1]})

    def routes(self) -> tuple[Route, ...]:
        return (
            Route(DISCOVERY_PATH, self.discovery, _methods("GET")),
            Route(JWKS_PATH, self.jwks, _methods("GET")),
            Route("/__idp/rotate", self.rotate, _methods("POST")),
            Route("/__idp/mode", self.set_mode, _methods("POST")),
        )


def idp_routes(keys: Path) -> tuple[Route, ...]:
    """The identity provider's routes, signing with the keys in ``keys`` (made if missing)."""
    idp.ensure_idp_keys(keys)
    return _IdentityProvider(keys).routes()


def respond(request: Request, provider: ProviderState, routes: Sequence[Route]) -> Response:
    """Route one request; socket-free so the behaviour is easy to reason about and extend."""
    if request.path.startswith(_FAILURE_PREFIX) and provider.should_fail():
        return json_response(503, {"error": "injected failure"})
    candidates = [route for route in routes if route.matches(request.path)]
    if not candidates:
        return json_response(404, {"error": "not found", "path": request.path})
    # HEAD is GET without a body; the socket layer drops the body.
    method = "GET" if request.method == "HEAD" else request.method
    route = next((r for r in candidates if r.methods is None or method in r.methods), None)
    if route is None:
        allowed = set().union(*(r.methods or () for r in candidates))
        if "GET" in allowed:
            allowed.add("HEAD")
        return Response(
            405,
            json.dumps({"error": "method not allowed"}).encode(),
            headers=(("allow", ", ".join(sorted(allowed))),),
        )
    try:
        return route.handler(request, provider)
    except MalformedInput as exc:
        _log.info("%s %s %s -> 500: %s", provider.name, request.method, request.path, exc)
    except Exception:
        # A real Flask app would also turn its own bugs into a 500; keep the traceback visible.
        _log.exception("%s %s %s crashed", provider.name, request.method, request.path)
    return Response(500, FLASK_500_HTML, "text/html; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# HTTP plumbing


class _BadFraming(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _ProviderServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], state: ProviderState, routes: Sequence[Route], log: bool
    ) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self.routes = tuple(routes)
        self.log_requests = log
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves getfqdn(host), which can stall on hosts without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]
        self.state.base_url = _base_url(self.server_name, self.server_port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Verifiers under test give up on a slow identity provider; the reply then meets a
        # closed socket, which is the client's choice, not a server bug worth a traceback.
        if isinstance(sys.exc_info()[1], ConnectionError):
            _log.debug("%s: client %s went away", self.state.name, client_address)
            return
        super().handle_error(request, client_address)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake handler threads idling on keep-alive connections so stop() leaves none behind."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # the peer may have closed it already
                connection.shutdown(socket.SHUT_RDWR)


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy expects from an upstream
    server: _ProviderServer

    def __getattr__(self, name: str) -> Callable[[], None]:
        # BaseHTTPRequestHandler looks up do_<METHOD>; answering every verb lets /echo reflect
        # anything (PURGE, PROPFIND...) and lets the routing table, not this class, decide 405s.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def _dispatch(self) -> None:
        state = self.server.state
        target = urlsplit(self.path)
        state.record(target.path)
        try:
            body = self._read_body()
        except _BadFraming as exc:
            # The rest of the stream can no longer be trusted to start a new request.
            self.close_connection = True
            self._send(json_response(exc.status, {"error": str(exc)}))
            return
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        request = Request(self.command, target.path, target.query, headers, body)
        self._send(respond(request, state, self.server.routes))

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        raw_length = self.headers.get("content-length")
        if raw_length is None:
            return b""
        try:
            length = int(raw_length)
        except ValueError:
            raise _BadFraming(400, "invalid Content-Length") from None
        if length < 0:
            raise _BadFraming(400, "invalid Content-Length")
        if length > MAX_BODY_BYTES:
            raise _BadFraming(413, "body too large")
        body = self.rfile.read(length)
        if len(body) != length:
            raise _BadFraming(400, "body shorter than Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        received = 0
        while True:
            line = self.rfile.readline(_MAX_LINE)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)  # drop chunk extensions
            except ValueError:
                raise _BadFraming(400, "invalid chunk size") from None
            if size < 0 or not line.endswith(b"\n"):
                raise _BadFraming(400, "invalid chunk size")
            if size == 0:
                break
            received += size
            if received > MAX_BODY_BYTES:
                raise _BadFraming(413, "body too large")
            chunk = self.rfile.read(size)
            if len(chunk) != size or self.rfile.readline(_MAX_LINE).strip():
                raise _BadFraming(400, "truncated chunk")
            chunks.append(chunk)
        while self.rfile.readline(_MAX_LINE).strip():
            pass  # trailers carry nothing the mock cares about
        return b"".join(chunks)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("content-type", response.content_type)
        # Always sent, also for HEAD, so keep-alive clients know where the next response starts.
        self.send_header("content-length", str(len(response.body)))
        self.send_header("x-mock-provider", self.server.state.name)
        for name, value in response.headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.log_requests:
            sys.stderr.write(f"[{self.server.state.name}] {format % args}\n")


# ---------------------------------------------------------------------------------------------
# Lifecycle


class MockUpstreams:
    """Running mock providers; ``ports`` holds the bound ports (useful when started on port 0)."""

    def __init__(self) -> None:
        self._servers: dict[str, tuple[_ProviderServer, threading.Thread]] = {}

    def _serve(self, server: _ProviderServer) -> None:
        thread = threading.Thread(
            target=server.serve_forever,
            # shutdown() waits for the next poll; the default 0.5 s makes every test teardown slow.
            kwargs={"poll_interval": 0.05},
            name=f"mock-upstream-{server.state.name}",
            daemon=True,
        )
        self._servers[server.state.name] = (server, thread)
        thread.start()

    @property
    def providers(self) -> dict[str, ProviderState]:
        return {name: server.state for name, (server, _) in self._servers.items()}

    @property
    def addresses(self) -> dict[str, tuple[str, int]]:
        return {
            name: (str(server.server_address[0]), server.server_address[1])
            for name, (server, _) in self._servers.items()
        }

    @property
    def ports(self) -> dict[str, int]:
        return {name: port for name, (_, port) in self.addresses.items()}

    def url(self, name: str) -> str:
        return _base_url(*self.addresses[name])

    def stop(self) -> None:
        for server, _ in self._servers.values():
            server.shutdown()
        for server, thread in self._servers.values():
            server.close_connections()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def __enter__(self) -> MockUpstreams:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start(
    providers: list[tuple[str, str, int]],
    *,
    routes: Sequence[Route] = DEFAULT_ROUTES,
    log_requests: bool = False,
    idp_keys: Path | None = None,
) -> MockUpstreams:
    """Serve each (name, host, port) in a background thread; port 0 picks a free port.

    With ``idp_keys`` every provider is also an identity provider signing with the keys there
    (made if missing)."""
    names = [name for name, _, _ in providers]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate provider names in {names}")
    if idp_keys is not None:
        routes = (*routes, *idp_routes(idp_keys))
    upstreams = MockUpstreams()
    try:
        for name, host, port in providers:
            upstreams._serve(
                _ProviderServer((host, port), ProviderState(name), routes, log_requests)
            )
    except BaseException:
        upstreams.stop()  # a later port may be taken; do not leak the ones already bound
        raise
    return upstreams


def parse_provider(spec: str) -> tuple[str, str, int]:
    """Parse ``NAME=HOST:PORT`` (``NAME=[::1]:PORT`` for IPv6)."""
    name, equals, address = spec.partition("=")
    host, colon, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not (name and equals and host and colon and port.isdigit() and int(port) < 65536):
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {spec!r}")
    return name, host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--provider",
        action="append",
        type=parse_provider,
        required=True,
        metavar="NAME=HOST:PORT",
        help="serve a mock provider; repeat for several (port 0 picks a free one)",
    )
    parser.add_argument(
        "--idp-keys",
        type=Path,
        metavar="DIR",
        help="also serve an OIDC identity provider on every port, with the signing keys in DIR "
        "(made if missing)",
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO)

    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    upstreams = start(args.provider, log_requests=not args.quiet, idp_keys=args.idp_keys)
    try:
        for name in upstreams.providers:
            print(f"mock upstream {name} listening on {upstreams.url(name)}", flush=True)
        stopping.wait()
    finally:
        upstreams.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
