"""Tests for the mock inference upstream, over real sockets on ephemeral ports."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from authz_service.devstack import mock_upstream
from authz_service.devstack.idp import mint_token, public_jwks
from authz_service.devstack.mock_upstream import (
    FLASK_500_HTML,
    MockUpstreams,
    image_format,
    parse_provider,
    start,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def make_png(width: int = 2, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = make_png()


class Reply:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return Reply(response.status, lowered(response.headers.items()), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, lowered(error.headers.items()), error.read())


def lowered(headers: list[tuple[str, str]]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers}


def post_json(url: str, payload: object) -> Reply:
    return call(url, "POST", json.dumps(payload).encode(), {"content-type": "application/json"})


@pytest.fixture
def upstreams() -> Iterator[MockUpstreams]:
    with start([("hosted", "127.0.0.1", 0), ("selfhosted", "127.0.0.1", 0)]) as running:
        yield running


@pytest.fixture
def base(upstreams: MockUpstreams) -> str:
    return upstreams.url("hosted")


def assert_flask_500(reply: Reply) -> None:
    assert reply.status == 500
    assert reply.headers["content-type"].startswith("text/html")
    assert reply.headers["x-mock-provider"] == "hosted"
    assert reply.body.startswith(b"<!doctype html>")
    assert b"<title>500 Internal Server Error</title>" in reply.body
    assert reply.body == FLASK_500_HTML


# --- chat completions --------------------------------------------------------------------------


def spawn_cli(*arguments: str) -> subprocess.Popen[str]:
    """The mock upstream as `make run` starts it: its own process, quiet, stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "authz_service.devstack.mock_upstream", *arguments, "--quiet"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def test_chat_completion_is_openai_shaped_with_usage(base: str) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there, how are you?"},
    ]
    reply = post_json(f"{base}/v1/chat/completions", {"model": "gpt-mock", "messages": messages})

    assert reply.status == 200
    assert reply.headers["x-mock-provider"] == "hosted"
    assert reply.headers["content-type"] == "application/json"
    body = reply.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-mock"
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"]
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    chars = sum(len(m["content"]) for m in messages)
    assert usage["prompt_tokens"] == math.ceil(chars / 4)
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    again = post_json(f"{base}/v1/chat/completions", {"model": "gpt-mock", "messages": messages})
    assert again.json()["choices"] == body["choices"]


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(),
        json.dumps({"model": "m", "messages": "hi"}).encode(),
        json.dumps({"model": "m", "messages": [{"role": "user", "content": 3}]}).encode(),
    ],
)
def test_chat_completion_malformed_input_crashes_with_500(base: str, body: bytes) -> None:
    reply = call(f"{base}/v1/chat/completions", "POST", body, {"content-type": "application/json"})
    assert_flask_500(reply)


# --- classify ----------------------------------------------------------------------------------


def multipart(fields: dict[str, bytes], boundary: str = "mockBoundary42") -> tuple[bytes, str]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.bin"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n".encode()
        + value
        + b"\r\n"
        for name, value in fields.items()
    ]
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_classify_accepts_png_as_json_multipart_and_raw(base: str) -> None:
    url = f"{base}/v1/classify"
    as_json = post_json(url, {"image": base64.b64encode(PNG).decode(), "top_k": 3})
    form_body, form_type = multipart({"image": PNG, "top_k": b"3"})
    as_form = call(url, "POST", form_body, {"content-type": form_type})
    as_raw = call(f"{url}?top_k=3", "POST", PNG, {"content-type": "image/png"})

    for reply in (as_json, as_form, as_raw):
        assert reply.status == 200, reply.body
        assert reply.headers["x-mock-provider"] == "hosted"
        assert reply.headers["content-type"] == "application/json"
        body = reply.json()
        assert body["provider"] == "hosted"
        assert len(body["predictions"]) == 3
        scores = [p["score"] for p in body["predictions"]]
        assert scores == sorted(scores, reverse=True)
        assert all(isinstance(p["label"], str) for p in body["predictions"])
    # Deterministic from the image bytes, whatever the transport.
    assert as_json.json() == as_form.json() == as_raw.json()


def test_classify_predictions_depend_on_image(base: str) -> None:
    url = f"{base}/v1/classify"
    first = post_json(url, {"image": base64.b64encode(PNG).decode(), "top_k": 10})
    other = post_json(url, {"image": base64.b64encode(make_png(3, 1)).decode(), "top_k": 10})
    assert first.status == other.status == 200
    assert len(first.json()["predictions"]) == 10
    assert first.json()["predictions"] != other.json()["predictions"]


def test_classify_multipart_preserves_binary_bytes(base: str) -> None:
    # Every byte value, CR and LF included, must survive the hand-written multipart parser.
    gif = b"GIF89a" + bytes(range(256)) + b"\r\n\r\n--x\r\n"
    form_body, form_type = multipart({"image": gif})
    reply = call(f"{base}/v1/classify", "POST", form_body, {"content-type": form_type})
    raw = call(f"{base}/v1/classify", "POST", gif, {"content-type": "image/gif"})
    assert reply.status == raw.status == 200
    assert reply.json() == raw.json()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b"{bad json", "application/json", id="bad-json"),
        pytest.param(b'{"image": "!!!not base64!!!"}', "application/json", id="bad-base64"),
        pytest.param(b'{"top_k": 1}', "application/json", id="missing-image"),
        pytest.param(b'{"image": 12}', "application/json", id="wrong-type"),
        pytest.param(
            json.dumps({"image": base64.b64encode(PNG).decode(), "top_k": 11}).encode(),
            "application/json",
            id="top-k-out-of-range",
        ),
        pytest.param(
            json.dumps({"image": base64.b64encode(PNG).decode(), "top_k": True}).encode(),
            "application/json",
            id="top-k-bool",
        ),
        pytest.param(
            json.dumps({"image": base64.b64encode(b"hello, world").decode()}).encode(),
            "application/json",
            id="not-an-image",
        ),
        pytest.param(
            json.dumps({"image": base64.b64encode(PNG[:-20]).decode()}).encode(),
            "application/json",
            id="truncated-png",
        ),
        pytest.param(PNG[:-1], "image/png", id="raw-truncated-png"),
        pytest.param(b"\xff\xd8\xff\xe0" + b"\x00" * 16, "image/jpeg", id="raw-truncated-jpeg"),
        pytest.param(b"plain text", "text/plain", id="unsupported-content-type"),
        pytest.param(
            b'--b\r\nContent-Disposition: form-data; name="image"\r\n\r\n' + PNG,
            "multipart/form-data; boundary=b",
            id="multipart-without-closing-delimiter",
        ),
        pytest.param(
            multipart({"file": PNG})[0], multipart({})[1], id="multipart-without-image-field"
        ),
    ],
)
def test_classify_malformed_input_crashes_with_500(
    base: str, body: bytes, content_type: str
) -> None:
    reply = call(f"{base}/v1/classify", "POST", body, {"content-type": content_type})
    assert_flask_500(reply)


def test_image_format_recognises_magic_numbers() -> None:
    assert image_format(PNG) == "png"
    assert image_format(b"\xff\xd8\xff\xe0JFIF\xff\xd9") == "jpeg"
    assert image_format(b"GIF87a...") == "gif"
    assert image_format(b"RIFF\x10\x00\x00\x00WEBPVP8 ") == "webp"
    assert image_format(b"BM\x00\x00") == "bmp"
    assert image_format(b"II*\x00\x08") == "tiff"
    assert image_format(b"MM\x00*\x00") == "tiff"


# --- echo, HTTP plumbing -----------------------------------------------------------------------


def test_echo_reflects_method_path_query_headers_and_body(base: str) -> None:
    body = b"0123456789" * 7
    reply = call(f"{base}/echo/some/sub?x=1&y=two", "PUT", body, {"X-Custom-Thing": "Value"})

    assert reply.status == 200
    assert reply.headers["x-mock-provider"] == "hosted"
    echoed = reply.json()
    assert echoed["provider"] == "hosted"
    assert echoed["method"] == "PUT"
    assert echoed["path"] == "/echo/some/sub"
    assert echoed["query"] == "x=1&y=two"
    assert echoed["headers"]["x-custom-thing"] == "Value"
    assert echoed["headers"]["content-length"] == str(len(body))
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()


def test_echo_accepts_any_method_and_head_has_no_body(upstreams: MockUpstreams) -> None:
    host, port = upstreams.addresses["hosted"]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        # Several requests on one connection: works only if every response is correctly framed.
        conn.request("PURGE", "/echo")
        purge = conn.getresponse()
        assert purge.status == 200
        assert json.loads(purge.read())["method"] == "PURGE"

        conn.request("HEAD", "/echo")
        head = conn.getresponse()
        assert head.status == 200
        assert int(head.getheader("content-length", "0")) > 0
        assert head.read() == b""

        conn.request("GET", "/echo")
        get = conn.getresponse()
        assert json.loads(get.read())["method"] == "GET"
    finally:
        conn.close()


def test_chunked_request_body_is_read(upstreams: MockUpstreams) -> None:
    host, port = upstreams.addresses["hosted"]
    conn = http.client.HTTPConnection(host, port, timeout=5)
    pieces = [b"hello ", b"chunked ", b"world"]
    try:
        conn.request("POST", "/echo", body=iter(pieces), encode_chunked=True)
        first = conn.getresponse()
        echoed = json.loads(first.read())
        assert echoed["headers"]["transfer-encoding"] == "chunked"
        assert echoed["body_length"] == len(b"".join(pieces))
        assert echoed["body_sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()

        # The connection stays usable after a chunked body.
        conn.request("POST", "/echo", body=b"abc")
        assert json.loads(conn.getresponse().read())["body_length"] == 3
    finally:
        conn.close()


def test_unknown_path_is_404_json(base: str) -> None:
    reply = call(f"{base}/nope")
    assert reply.status == 404
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["x-mock-provider"] == "hosted"
    assert reply.json()["error"] == "not found"


def test_wrong_method_is_405_with_allow(base: str) -> None:
    reply = call(f"{base}/v1/chat/completions")
    assert reply.status == 405
    assert reply.headers["allow"] == "POST"
    assert reply.headers["x-mock-provider"] == "hosted"


# --- control endpoints -------------------------------------------------------------------------


def test_stats_count_every_request_and_reset(base: str) -> None:
    call(f"{base}/echo?a=1")
    call(f"{base}/echo?a=2")
    post_json(f"{base}/v1/chat/completions", {"model": "m", "messages": []})  # a 500 counts too
    call(f"{base}/missing")

    stats = call(f"{base}/__stats")
    assert stats.status == 200
    assert stats.json() == {
        "provider": "hosted",
        "requests": {"/echo": 2, "/v1/chat/completions": 1, "/missing": 1, "/__stats": 1},
    }

    assert call(f"{base}/__stats", "DELETE").status == 200
    assert call(f"{base}/__stats").json()["requests"] == {"/__stats": 1}


def test_failure_injection_rate_one_and_zero(base: str) -> None:
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    assert call(f"{base}/__fail?rate=1", "POST").status == 200
    for _ in range(3):
        failed = post_json(f"{base}/v1/chat/completions", chat)
        assert failed.status == 503
        assert failed.json() == {"error": "injected failure"}
        assert failed.headers["x-mock-provider"] == "hosted"
    assert call(f"{base}/echo").status == 200  # only /v1/* is affected

    assert call(f"{base}/__fail?rate=0", "POST").status == 200
    for _ in range(3):
        assert post_json(f"{base}/v1/chat/completions", chat).status == 200


@pytest.mark.parametrize(
    "query", ["", "?rate=", "?rate=abc", "?rate=1.5", "?rate=-0.1", "?rate=nan"]
)
def test_failure_injection_rejects_invalid_rate(base: str, query: str) -> None:
    reply = call(f"{base}/__fail{query}", "POST")
    assert reply.status == 400
    assert reply.headers["content-type"] == "application/json"


def test_providers_on_separate_ports_report_their_names(upstreams: MockUpstreams) -> None:
    assert upstreams.ports["hosted"] != upstreams.ports["selfhosted"]
    for name in ("hosted", "selfhosted"):
        reply = call(f"{upstreams.url(name)}/echo")
        assert reply.headers["x-mock-provider"] == name
        assert reply.json()["provider"] == name
    # Counters are per provider.
    assert call(f"{upstreams.url('selfhosted')}/__stats").json()["requests"] == {
        "/echo": 1,
        "/__stats": 1,
    }


def test_stop_closes_idle_keep_alive_connections() -> None:
    running = start([("solo", "127.0.0.1", 0)])
    conn = http.client.HTTPConnection("127.0.0.1", running.ports["solo"], timeout=5)
    conn.request("GET", "/echo")
    conn.getresponse().read()
    running.stop()  # must not hang on the idle connection
    conn.close()
    assert running.ports == {}


def test_duplicate_provider_names_are_rejected() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        start([("a", "127.0.0.1", 0), ("a", "127.0.0.1", 0)])


# --- CLI ---------------------------------------------------------------------------------------


def test_parse_provider() -> None:
    assert parse_provider("hosted=127.0.0.1:18080") == ("hosted", "127.0.0.1", 18080)
    assert parse_provider("v6=[::1]:0") == ("v6", "::1", 0)
    for bad in ("hosted", "hosted=127.0.0.1", "=127.0.0.1:1", "h=127.0.0.1:x", "h=:80"):
        with pytest.raises(Exception, match="NAME=HOST:PORT"):
            parse_provider(bad)


def test_cli_serves_until_sigterm() -> None:
    process = spawn_cli("--provider", "alpha=127.0.0.1:0", "--provider", "beta=127.0.0.1:0")
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(2)]
        urls = {line.split()[2]: line.split()[-1] for line in lines}
        assert set(urls) == {"alpha", "beta"}
        assert call(f"{urls['beta']}/echo").json()["provider"] == "beta"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_bad_chunked_framing_is_400_and_closes(upstreams: MockUpstreams) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw = head + b"zz\r\nabc\r\n0\r\n\r\n"  # "zz" is not a hex chunk size
    with socket.create_connection(upstreams.addresses["hosted"], timeout=5) as sock:
        sock.sendall(raw)
        received = b""
        while data := sock.recv(65536):  # the server closes the connection after answering
            received += data
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in received.lower()


# --- identity provider -------------------------------------------------------------------------

DISCOVERY = "/.well-known/openid-configuration"
JWKS = "/.well-known/jwks.json"


@pytest.fixture
def idp_keys(tmp_path: Path) -> Path:
    return tmp_path / "idp"


@pytest.fixture
def idp(idp_keys: Path) -> Iterator[MockUpstreams]:
    providers = [("hosted", "127.0.0.1", 0), ("selfhosted", "127.0.0.1", 0)]
    with start(providers, idp_keys=idp_keys) as running:
        yield running


def test_discovery_issuer_is_the_providers_own_url(idp: MockUpstreams, idp_keys: Path) -> None:
    for name in ("hosted", "selfhosted"):
        base = idp.url(name)
        reply = call(base + DISCOVERY)
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        document = reply.json()
        host, port = idp.addresses[name]
        assert document["issuer"] == base == f"http://{host}:{port}"
        assert document["jwks_uri"] == base + JWKS
        assert document["id_token_signing_alg_values_supported"] == ["ES256", "RS256"]
        assert {"response_types_supported", "subject_types_supported"} <= document.keys()


def test_jwks_uri_serves_the_public_keys_and_they_verify_minted_tokens(
    idp: MockUpstreams, idp_keys: Path
) -> None:
    document = call(idp.url("hosted") + DISCOVERY).json()
    reply = call(document["jwks_uri"])

    assert reply.status == 200
    assert reply.headers["cache-control"] == "max-age=60"
    assert reply.json() == public_jwks(idp_keys)
    assert "d" not in reply.json()["keys"][0]
    assert call(document["jwks_uri"], "HEAD").body == b""

    token = mint_token(idp_keys, issuer=document["issuer"], subject="bob")
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(reply.json())[kid]
    claims = jwt.decode(
        token,
        key.key,
        algorithms=document["id_token_signing_alg_values_supported"],
        audience="authz-demo",
        issuer=document["issuer"],
    )
    assert claims["sub"] == "bob"


def test_start_with_idp_keys_makes_them(idp: MockUpstreams, idp_keys: Path) -> None:
    assert (idp_keys / "signing-keys.json").exists()


def test_rotate_over_http(idp: MockUpstreams) -> None:
    base = idp.url("hosted")
    before = [k["kid"] for k in call(base + JWKS).json()["keys"]]

    rotated = call(f"{base}/__idp/rotate", "POST")
    assert rotated.status == 200
    new_kid = rotated.json()["kid"]
    # Every port publishes the same key set, so the other provider sees the rotation too.
    for name in ("hosted", "selfhosted"):
        assert [k["kid"] for k in call(idp.url(name) + JWKS).json()["keys"]] == [new_kid, *before]

    again = call(f"{base}/__idp/rotate?keep_old=0", "POST").json()["kid"]
    assert [k["kid"] for k in call(base + JWKS).json()["keys"]] == [again]
    assert call(base + DISCOVERY).json()["id_token_signing_alg_values_supported"] == ["RS256"]

    assert call(f"{base}/__idp/rotate?keep_old=yes", "POST").status == 400
    assert call(f"{base}/__idp/rotate").status == 405


@pytest.mark.parametrize("path", [DISCOVERY, JWKS])
def test_mode_down_and_garbage_then_ok(idp: MockUpstreams, path: str) -> None:
    base = idp.url("hosted")
    assert call(f"{base}/__idp/mode?mode=down", "POST").json() == {
        "provider": "hosted",
        "mode": "down",
    }
    assert call(base + path).status == 503
    assert call(idp.url("selfhosted") + path).status == 200  # modes are per provider

    assert call(f"{base}/__idp/mode?mode=garbage", "POST").status == 200
    garbage = call(base + path)
    assert garbage.status == 200
    assert garbage.body == b"<html>oops</html>"
    assert garbage.headers["content-type"].startswith("text/html")

    assert call(f"{base}/__idp/mode?mode=ok", "POST").status == 200
    assert call(base + path).json()


def test_mode_slow_delays_the_answer(idp: MockUpstreams, monkeypatch: pytest.MonkeyPatch) -> None:
    assert mock_upstream.IDP_SLOW_S == 3.0
    monkeypatch.setattr(mock_upstream, "IDP_SLOW_S", 0.5)
    base = idp.url("hosted")
    host, port = idp.addresses["hosted"]
    assert call(f"{base}/__idp/mode?mode=slow", "POST").status == 200

    impatient = http.client.HTTPConnection(host, port, timeout=0.1)
    try:
        impatient.request("GET", JWKS)
        with pytest.raises(TimeoutError):
            impatient.getresponse()
    finally:
        impatient.close()

    started = time.monotonic()
    reply = call(base + DISCOVERY)
    assert time.monotonic() - started >= 0.5
    assert reply.status == 200
    assert reply.json()["issuer"] == base

    call(f"{base}/__idp/mode?mode=ok", "POST")
    started = time.monotonic()
    assert call(base + JWKS).status == 200
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("query", ["", "?mode=", "?mode=broken"])
def test_mode_rejects_unknown_modes(idp: MockUpstreams, query: str) -> None:
    reply = call(f"{idp.url('hosted')}/__idp/mode{query}", "POST")
    assert reply.status == 400
    assert "ok" in reply.json()["error"]


@pytest.mark.parametrize("path", [DISCOVERY, JWKS, "/__idp/rotate", "/__idp/mode?mode=down"])
def test_idp_paths_are_404_without_idp_keys(base: str, path: str) -> None:
    method = "POST" if path.startswith("/__idp") else "GET"
    assert call(base + path, method).status == 404


def test_cli_serves_the_idp_with_idp_keys(tmp_path: Path) -> None:
    process = spawn_cli("--provider", "alpha=127.0.0.1:0", "--idp-keys", str(tmp_path / "idp"))
    try:
        assert process.stdout is not None
        url = process.stdout.readline().split()[-1]
        assert call(url + DISCOVERY).json()["issuer"] == url
        assert call(url + JWKS).json() == public_jwks(tmp_path / "idp")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
