"""The protocol layer through the real pipeline, fed CheckRequests as Envoy builds them."""

from __future__ import annotations

import asyncio
import gzip
import zlib
from pathlib import Path

import pytest
from envoy.config.core.v3.base_pb2 import HeaderValue

from authz_service.decision import Decision
from tests.helpers import check_request, decide, write_policy

POLICY = """
    version: 1
    defaults:
      protocol: { max_body_bytes: 1024, json: { max_depth: 4, max_elements: 20 } }
    routes:
      - name: chat
        match: { path: { exact: /v1/chat/completions }, methods: [POST] }
        protocol: { content_types: [application/json], body: required }
      - name: model
        match: { path: { template: "/v1/models/{model}" }, methods: [GET, DELETE] }
        protocol: { body: forbidden }
      - name: upload
        match: { path: { prefix: /upload }, methods: [PUT] }
        protocol: { content_types: [image/*], allow_partial_body: true }
      - name: notes
        match: { path: { prefix: /notes }, hosts: ["*.example.com"], methods: [POST] }
        protocol: { content_types: [text/plain] }
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    return write_policy(tmp_path, POLICY)


def run(policy: Path, *args: object, **kwargs: object) -> Decision:
    return asyncio.run(decide(policy, check_request(*args, **kwargs)))  # type: ignore[arg-type]


JSON = {"content-type": "application/json"}


def test_well_formed_json_is_allowed_with_a_decision_id(policy: Path) -> None:
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=b'{"model": "x"}')
    assert decision.allowed and decision.route == "chat"
    assert decision.headers["x-authz-decision-id"] == decision.decision_id
    assert decision.response_headers["x-authz-decision-id"] == decision.decision_id


def test_wrong_method_gets_405_with_allow(policy: Path) -> None:
    decision = run(policy, "GET", "/v1/chat/completions")
    assert (decision.status, decision.reason) == (405, "protocol.method_not_allowed")
    assert decision.headers["allow"] == "POST"


def test_unknown_route_gets_404(policy: Path) -> None:
    decision = run(policy, "GET", "/v2/anything")
    assert (decision.status, decision.reason) == (404, "protocol.route_not_found")
    assert decision.error_body()["error"]["decision_id"] == decision.decision_id


def test_unmatched_can_fall_back_to_a_named_route(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY + "    unmatched: { route: model }\n")
    assert run(policy, "GET", "/somewhere/else").allowed
    assert run(policy, "GET", "/somewhere/else", headers=JSON, body=b"{}").reason == (
        "protocol.body_forbidden"
    )


def test_unmatched_status_is_configurable(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY + "    unmatched: { status: 403 }\n")
    assert run(policy, "GET", "/nope").status == 403


def test_template_and_host_matching(policy: Path) -> None:
    assert run(policy, "GET", "/v1/models/gpt-4o").route == "model"
    assert run(policy, "GET", "/v1/models/a/b").reason == "protocol.route_not_found"
    text = {"content-type": "text/plain"}
    assert run(policy, "POST", "/notes", headers=text, body=b"hi", host="a.example.com:443").allowed
    assert run(policy, "POST", "/notes", headers=text, body=b"hi", host="evil.com").status == 404


def test_content_type_not_accepted_is_415(policy: Path) -> None:
    decision = run(
        policy, "POST", "/v1/chat/completions", headers={"content-type": "text/xml"}, body=b"<a/>"
    )
    assert (decision.status, decision.reason) == (415, "protocol.unsupported_media_type")
    assert "application/json" in decision.message
    no_type = run(policy, "POST", "/v1/chat/completions", body=b"{}")
    assert no_type.status == 415


def test_wildcard_content_type(policy: Path) -> None:
    png = {"content-type": "image/png"}
    assert run(policy, "PUT", "/upload", headers=png, body=b"\x89PNG").allowed


def test_body_over_the_route_limit_is_413(policy: Path) -> None:
    body = b'{"a": "' + b"x" * 2000 + b'"}'
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body)
    assert (decision.status, decision.reason) == (413, "protocol.body_too_large")


def test_declared_length_counts_even_when_envoy_truncated(policy: Path) -> None:
    headers = {**JSON, "x-envoy-auth-partial-body": "true", "content-length": "999999"}
    decision = run(policy, "POST", "/v1/chat/completions", headers=headers, body=b"{")
    assert decision.reason == "protocol.body_too_large"


def test_truncated_body_is_413_unless_the_route_allows_it(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY.replace("max_body_bytes: 1024", "max_body_bytes: 9999"))
    partial = {"x-envoy-auth-partial-body": "true"}
    decision = run(
        policy, "POST", "/v1/chat/completions", headers={**JSON, **partial}, body=b'{"a":'
    )
    assert (decision.status, decision.reason) == (413, "protocol.body_truncated")
    upload = run(
        policy, "PUT", "/upload", headers={"content-type": "image/png", **partial}, body=b"\x89PNG"
    )
    assert upload.allowed


def test_body_required_and_forbidden(policy: Path) -> None:
    empty = run(policy, "POST", "/v1/chat/completions", headers=JSON)
    assert (empty.status, empty.reason) == (400, "protocol.body_required")
    forbidden = run(policy, "DELETE", "/v1/models/x", headers=JSON, body=b"{}")
    assert (forbidden.status, forbidden.reason) == (400, "protocol.body_forbidden")


def test_invalid_json_names_the_position(policy: Path) -> None:
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=b'{\n  "a": tru}')
    assert (decision.status, decision.reason) == (400, "protocol.invalid_json")
    assert decision.details == {"line": 2, "column": 8, "position": 9}
    assert "line 2 column 8" in decision.message


@pytest.mark.parametrize("body", [b"[NaN]", b'{"a": 1,}', b"{'a': 1}", b"[Infinity]"])
def test_non_standard_json_is_rejected(policy: Path, body: bytes) -> None:
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body)
    assert decision.reason == "protocol.invalid_json"


def test_json_depth_and_element_limits(policy: Path) -> None:
    deep = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=b'{"a":[[[[1]]]]}')
    assert (deep.status, deep.reason) == (400, "protocol.json_too_deep")
    ok = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=b'{"a":[[[1]]]}')
    assert ok.allowed
    wide = run(
        policy,
        "POST",
        "/v1/chat/completions",
        headers=JSON,
        body=b'{"a":[' + b",".join([b"1"] * 25) + b"]}",
    )
    assert (wide.status, wide.reason) == (413, "protocol.json_too_many_elements")


def test_recursion_bomb_is_refused_not_crashed(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, POLICY.replace("max_body_bytes: 1024", "max_body_bytes: 99999"))
    body = b"[" * 5000 + b"]" * 5000
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body)
    assert decision.reason == "protocol.json_too_deep"


def test_invalid_utf8_in_json_and_text_bodies(policy: Path) -> None:
    in_json = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=b'{"a": "\xff"}')
    assert (in_json.status, in_json.reason) == (400, "protocol.invalid_utf8")
    assert in_json.details == {"position": 7}
    text = {"content-type": "text/plain"}
    in_text = run(policy, "POST", "/notes", headers=text, body=b"ok \xc3\x28", host="a.example.com")
    assert (in_text.reason, in_text.details) == ("protocol.invalid_utf8", {"position": 3})


def test_non_utf8_charset_is_415(policy: Path) -> None:
    latin = {"content-type": "text/plain; charset=iso-8859-1"}
    decision = run(policy, "POST", "/notes", headers=latin, body=b"caf\xe9", host="a.example.com")
    assert (decision.status, decision.reason) == (415, "protocol.unsupported_charset")


def test_invalid_utf8_in_a_raw_header_is_400(policy: Path) -> None:
    request = check_request("POST", "/v1/chat/completions", headers=JSON, body=b"{}")
    header_map = request.attributes.request.http.header_map
    header_map.headers.append(HeaderValue(key="content-type", raw_value=b"application/json"))
    header_map.headers.append(HeaderValue(key="x-note", raw_value=b"\xff\xfe"))
    decision = asyncio.run(decide(policy, request))
    assert (decision.status, decision.reason) == (400, "protocol.invalid_header_encoding")
    assert "x-note" in decision.message


def test_missing_fields_are_a_clear_400(policy: Path) -> None:
    from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

    decision = asyncio.run(decide(policy, CheckRequest()))
    assert (decision.status, decision.reason) == (400, "protocol.incomplete_request")


def test_client_sent_internal_headers_are_removed(policy: Path) -> None:
    headers = {**JSON, "x-authz-tier": "pro", "x-authz-decision-id": "forged"}
    decision = run(policy, "POST", "/v1/chat/completions", headers=headers, body=b"{}")
    assert decision.allowed
    assert "x-authz-tier" in decision.headers_to_remove
    # Overwritten rather than removed: ours replaces the forged one.
    assert decision.headers["x-authz-decision-id"] != "forged"
    assert "x-authz-decision-id" not in decision.headers_to_remove


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": 1, "a": 2}',
        b'[{"x": {"b": 1, "c": 2, "b": 3}}]',
        b'{"a": 1, "\\u0061": 2}',
        b'{"a" :1, "a"\n\t:2}',  # whitespace before the colon
        # a quote and colon inside a string must not make up for the repeated key
        b'{"a": "say \\":\\" now", "a": 2}',
        b'{"a": ":", "b": {"a": 1}, "b": 2}',
    ],
)
def test_duplicate_keys_are_refused(policy: Path, body: bytes) -> None:
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body)
    assert (decision.status, decision.reason) == (400, "protocol.duplicate_json_key")


@pytest.mark.parametrize(
    "body",
    [
        b'{"a" : 1, "b"\r\n:{"a": [{"a" :2}]}}',
        b'{"a": "\\": \\":", "\\":": ":", "c": [":", "\\"  :"]}',
        b'[{"a": 1}, {"a": 2}]',
        b'"\\":"',
    ],
)
def test_the_same_key_in_different_objects_or_inside_strings_is_fine(
    policy: Path, body: bytes
) -> None:
    assert run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body).allowed


def test_duplicate_keys_last_wins_by_policy(tmp_path: Path) -> None:
    text = POLICY.replace("max_elements: 20 }", "max_elements: 20, duplicate_keys: last_wins }")
    policy = write_policy(tmp_path, text)
    body = b'{"a": 1, "a": 2}'
    assert run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body).allowed


@pytest.mark.parametrize(
    ("body", "allowed"),
    [
        (b'{"n": 9007199254740992}', True),
        (b'{"n": -9007199254740992.0}', True),
        (b'{"n": 9007199254740993}', False),
        (b'{"n": 123456789012345678901234567890}', False),
        (b'{"n": [1e300]}', False),
        (b'{"n": 1e400}', False),
        (b"-1e309", False),
    ],
)
def test_huge_numbers_are_bounded(policy: Path, body: bytes, allowed: bool) -> None:
    decision = run(policy, "POST", "/v1/chat/completions", headers=JSON, body=body)
    assert decision.allowed is allowed
    if not allowed:
        assert (decision.status, decision.reason) == (400, "protocol.json_number_too_large")


COMPRESSED = """
    version: 1
    routes:
      - name: chat
        match: { path: { exact: /v1/chat/completions }, methods: [POST] }
        protocol:
          content_types: [application/json]
          decompress: { encodings: [gzip, deflate], max_decoded_bytes: 10000, max_ratio: 30 }
      - name: plain
        match: { path: { exact: /plain }, methods: [POST] }
        protocol: { content_types: [application/json] }
"""


def encoded(coding: str, body: bytes) -> dict[str, object]:
    packed = gzip.compress(body) if coding == "gzip" else zlib.compress(body)
    return {"headers": {**JSON, "content-encoding": coding}, "body": packed}


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_compressed_bodies_are_decoded_then_checked(tmp_path: Path, coding: str) -> None:
    policy = write_policy(tmp_path, COMPRESSED)
    ok = run(policy, "POST", "/v1/chat/completions", **encoded(coding, b'{"model": "m"}'))
    assert ok.allowed, ok.message
    bad = run(policy, "POST", "/v1/chat/completions", **encoded(coding, b'{"model": '))
    assert bad.reason == "protocol.invalid_json"


def test_decompression_limits(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, COMPRESSED)
    bomb = run(policy, "POST", "/v1/chat/completions", **encoded("gzip", b" " * 9000 + b"{}"))
    assert (bomb.status, bomb.reason) == (413, "protocol.decoded_body_too_large")
    assert "30 times" in bomb.message  # 9 KB of spaces packs far better than 30:1
    varied = bytes(range(256)) * 50  # barely compressible, but over 10,000 bytes decoded
    large = run(policy, "POST", "/v1/chat/completions", **encoded("gzip", varied))
    assert (large.status, large.reason) == (413, "protocol.decoded_body_too_large")
    assert "10000 bytes" in large.message


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({"content-encoding": "br"}, b"x", 415, "protocol.unsupported_content_encoding"),
        ({"content-encoding": "gzip, gzip"}, b"x", 415, "protocol.unsupported_content_encoding"),
        ({"content-encoding": "gzip"}, b"not gzip", 400, "protocol.invalid_content_encoding"),
        ({"content-encoding": "gzip"}, gzip.compress(b"{}")[:-4], 400,
         "protocol.invalid_content_encoding"),
        ({"content-encoding": "gzip"}, gzip.compress(b"{}") * 2, 400,
         "protocol.invalid_content_encoding"),
    ],
)  # fmt: skip
def test_bad_encodings(
    tmp_path: Path, headers: dict[str, str], body: bytes, status: int, reason: str
) -> None:
    policy = write_policy(tmp_path, COMPRESSED)
    decision = run(policy, "POST", "/v1/chat/completions", headers={**JSON, **headers}, body=body)
    assert (decision.status, decision.reason) == (status, reason)


def test_a_route_without_decompress_refuses_encoded_bodies(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, COMPRESSED)
    decision = run(policy, "POST", "/plain", **encoded("gzip", b"{}"))
    assert (decision.status, decision.reason) == (415, "protocol.unsupported_content_encoding")
    assert decision.headers["accept-encoding"] == "identity"


def test_duplicate_key_shortcut_agrees_with_the_exact_check() -> None:
    """Random documents whose keys and strings are made of quotes, colons and whitespace,
    written with random spacing: refused exactly when some object repeats a key."""
    import random

    from authz_service.decision import Denial
    from authz_service.layers.protocol.json_body import parse_json
    from authz_service.layers.protocol.settings import JsonLimits

    rng = random.Random(20261128)
    alphabet = ['"', ":", " ", "a", "b", "\\", "\n"]

    def string() -> str:
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4)))
        return '"' + raw.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'

    def value(depth: int) -> tuple[str, bool]:
        if depth > 2 or rng.random() < 0.3:
            return rng.choice([string(), "1", "null"]), False
        if rng.random() < 0.3:
            items = [value(depth + 1) for _ in range(rng.randint(0, 3))]
            return "[" + ",".join(text for text, _ in items) + "]", any(d for _, d in items)
        keys = [string() for _ in range(rng.randint(0, 4))]
        duplicated = len(set(keys)) != len(keys)
        members = []
        for key in keys:
            text, inner = value(depth + 1)
            duplicated |= inner
            members.append(key + rng.choice(["", " ", "\n\t"]) + ":" + rng.choice(["", " "]) + text)
        return "{" + ",".join(members) + "}", duplicated

    limits = JsonLimits()
    refused = 0
    for _ in range(3000):
        text, duplicated = value(0)
        outcome = parse_json(text.encode(), limits)
        is_refused = isinstance(outcome, Denial)
        assert is_refused == duplicated, text
        refused += is_refused
    assert 100 < refused < 2900  # both kinds were tried
