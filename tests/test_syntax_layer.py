"""The syntax layer through the real pipeline: schemas (files, $ref, drafts, formats,
built-ins), OpenAPI documents, forms, multipart, images, LLM limits per tier, and the
policy problems a bad schema or document causes."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from authz_service.decision import Decision
from authz_service.devstack.run import png_declaring
from authz_service.policy import PolicyError, load_policy
from tests.helpers import TIER_KEYS, api_key_identity, check_request, decide, write_policy
from tests.payloads import JPEG, PNG, b64, image_bytes, multipart

FREE_KEY, PRO_KEY, TRIAL_KEY = TIER_KEYS["free"], TIER_KEYS["pro"], TIER_KEYS["trial"]

POLICY = f"""
    version: 1
{api_key_identity()}
    syntax:
      schemas:
        order: {{ file: schemas/order.json }}
        legacy: {{ file: schemas/legacy.yaml }}
        note:
          inline:
            type: object
            required: [text]
            properties: {{ text: {{ type: string, maxLength: 10 }} }}
      openapi:
        shop: {{ file: shop.yaml }}
    defaults:
      identity: {{ anonymous: true }}
      protocol:
        max_body_bytes: 1048576
        decompress: {{ encodings: [gzip], max_decoded_bytes: 4096, max_ratio: 20 }}
    routes:
      - name: orders
        match: {{ path: {{ exact: /orders }}, methods: [POST] }}
        syntax: {{ json_schema: order, max_violations: 3 }}
      - name: legacy
        match: {{ path: {{ exact: /legacy }}, methods: [POST] }}
        syntax: {{ json_schema: legacy }}
      - name: notes
        match: {{ path: {{ exact: /notes }}, methods: [POST] }}
        syntax: {{ json_schema: note }}
      - name: chat
        match: {{ path: {{ exact: /v1/chat/completions }}, methods: [POST] }}
        identity: {{ providers: [keys] }}
        syntax:
          llm:
            api: openai.chat_completions
            limits:
              "*": {{ max_messages: 8, max_message_chars: 100, max_total_chars: 150 }}
              free: {{ max_output_tokens: 64 }}
              trial: {{ max_messages: 2, allowed_parameters: [max_tokens] }}
      - name: claude
        match: {{ path: {{ exact: /v1/messages }}, methods: [POST] }}
        syntax:
          llm: {{ api: anthropic.messages, limits: {{ "*": {{ max_total_chars: 20 }} }} }}
      - name: completions
        match: {{ path: {{ exact: /v1/completions }}, methods: [POST] }}
        syntax:
          llm: {{ api: openai.completions, limits: {{ "*": {{ max_total_chars: 20 }} }} }}
      - name: shop
        match: {{ path: {{ prefix: /shop/ }} }}
        syntax:
          openapi: shop
          image: {{ multipart_field: photo, max_pixels: 1000000 }}
      - name: upload
        match: {{ path: {{ exact: /upload }}, methods: [POST] }}
        syntax:
          multipart:
            max_parts: 3
            fields:
              photo: {{ required: true, content_types: [image/png, image/jpeg] }}
              caption: {{}}
          image: {{ multipart_field: photo, formats: [png, jpeg] }}
      - name: avatar
        match: {{ path: {{ exact: /avatar }}, methods: [POST, PUT] }}
        syntax:
          image:
            json_pointer: /avatar/data
            allow_data_url: true
            formats: [png]
            max_width: 100
            max_height: 100
      - name: form
        match: {{ path: {{ exact: /form }}, methods: [POST] }}
        syntax:
          form: {{ max_fields: 4 }}
          json_schema: note
"""

ORDER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["id", "email", "items"],
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "email": {"type": "string", "format": "email"},
        "when": {"type": "string", "format": "date-time"},
        "callback": {"type": "string", "format": "uri"},
        "items": {"type": "array", "items": {"$ref": "common/item.json"}, "maxItems": 50},
    },
}
ITEM_SCHEMA = {
    "type": "object",
    "required": ["sku", "quantity"],
    "properties": {
        "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
        "quantity": {"$ref": "#/$defs/quantity"},
    },
    "$defs": {"quantity": {"type": "integer", "minimum": 1, "maximum": 99}},
}
LEGACY_SCHEMA = """
$schema: "http://json-schema.org/draft-07/schema#"
type: object
required: [code]
properties:
  code: { type: integer, exclusiveMinimum: 0 }
dependencies:
  code: [label]
"""
SHOP_API = """
openapi: 3.0.3
info: { title: shop, version: "1" }
servers: [{ url: "https://shop.example.com/shop" }]
paths:
  /items/{item-sku}:
    parameters:
      - name: item-sku
        in: path
        required: true
        schema: { type: string, pattern: "^[A-Z]{3}$" }
    get:
      operationId: getItem
      parameters:
        - { name: limit, in: query, schema: { type: integer, minimum: 1, maximum: 10 } }
        - { name: tags, in: query, schema: { type: array, items: { type: string } } }
        - { name: x-shop, in: header, required: true, schema: { type: string, enum: [a, b] } }
    put:
      requestBody:
        required: true
        content:
          application/json:
            schema: { $ref: "#/components/schemas/Item" }
          multipart/form-data:
            schema:
              type: object
              required: [photo, count]
              properties:
                photo: { type: string, format: binary }
                count: { type: integer, minimum: 1 }
          application/x-www-form-urlencoded:
            schema:
              type: object
              required: [count]
              properties: { count: { type: integer, minimum: 1 } }
components:
  schemas:
    Item:
      type: object
      required: [name]
      additionalProperties: false
      properties:
        name: { type: string }
        note: { type: string, nullable: true }
        price: { type: number, minimum: 0, exclusiveMinimum: true }
"""

VALID_ORDER = {
    "id": "2f1b8c7e-8d44-4c1b-9d5e-3a1f0b6c2d11",
    "email": "alice@example.com",
    "when": "2026-11-27T10:00:00Z",
    "callback": "https://example.com/hook",
    "items": [{"sku": "ABC-1234", "quantity": 2}],
}


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "schemas" / "common").mkdir(parents=True)
    (tmp_path / "schemas" / "order.json").write_text(json.dumps(ORDER_SCHEMA))
    (tmp_path / "schemas" / "common" / "item.json").write_text(json.dumps(ITEM_SCHEMA))
    (tmp_path / "schemas" / "legacy.yaml").write_text(LEGACY_SCHEMA)
    (tmp_path / "shop.yaml").write_text(SHOP_API)
    return write_policy(tmp_path, POLICY)


def run(
    policy: Path,
    method: str,
    path: str,
    body: bytes | Any = b"",
    content_type: str = "application/json",
    **headers: str,
) -> Decision:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    all_headers = {"content-type": content_type, **headers} if data else dict(headers)
    return asyncio.run(decide(policy, check_request(method, path, headers=all_headers, body=data)))


def violations(decision: Decision) -> list[dict[str, str]]:
    assert decision.details is not None
    found: list[dict[str, str]] = decision.details["violations"]
    return found


# ---- JSON Schema files, $ref, drafts, formats ----


def test_a_valid_body_passes_its_schema(policy: Path) -> None:
    decision = run(policy, "POST", "/orders", VALID_ORDER)
    assert decision.allowed, decision.message


def test_violations_name_the_field_and_rule_across_referenced_files(policy: Path) -> None:
    order = {**VALID_ORDER, "items": [{"sku": "abc", "quantity": 0}]}
    decision = run(policy, "POST", "/orders", order)
    assert (decision.status, decision.reason, decision.layer) == (
        422,
        "syntax.schema_violation",
        "syntax",
    )
    found = {(v["pointer"], v["rule"]) for v in violations(decision)}
    assert found == {("/items/0/sku", "pattern"), ("/items/0/quantity", "minimum")}
    assert "/items/0/" in decision.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", "not-a-uuid"),
        ("email", "no-at-sign"),
        ("when", "yesterday"),
        ("callback", "not a uri"),
    ],
)
def test_formats_that_matter_are_checked(policy: Path, field: str, value: str) -> None:
    decision = run(policy, "POST", "/orders", {**VALID_ORDER, field: value})
    assert decision.status == 422
    assert violations(decision) == [
        {"pointer": f"/{field}", "rule": "format", "message": violations(decision)[0]["message"]}
    ]


def test_violations_are_capped_and_never_echo_values(policy: Path) -> None:
    secret = "s3cr3t-" + "x" * 5000
    order = {"id": secret, "email": secret, "items": "nope", "a": 1, "b": 2, "c": 3}
    decision = run(policy, "POST", "/orders", order)
    assert decision.status == 422
    assert len(violations(decision)) == 3  # max_violations
    assert decision.details is not None and decision.details["truncated"] is True
    text = json.dumps(decision.error_body())
    assert "s3cr3t" not in text and len(text) < 2000


def test_draft_07_schema_from_yaml(policy: Path) -> None:
    assert run(policy, "POST", "/legacy", {"code": 1, "label": "x"}).allowed
    missing_label = run(policy, "POST", "/legacy", {"code": 1})
    assert violations(missing_label)[0]["rule"] == "dependencies"
    assert violations(run(policy, "POST", "/legacy", {"code": 0, "label": "x"}))[0]["rule"] == (
        "exclusiveMinimum"
    )


def test_inline_schema(policy: Path) -> None:
    assert run(policy, "POST", "/notes", {"text": "short"}).allowed
    assert violations(run(policy, "POST", "/notes", {"text": "much too long"}))[0] == {
        "pointer": "/text",
        "rule": "maxLength",
        "message": violations(run(policy, "POST", "/notes", {"text": "much too long"}))[0][
            "message"
        ],
    }


def test_a_gzip_body_is_validated_after_decoding(policy: Path) -> None:
    packed = gzip.compress(json.dumps({"text": "much too long"}).encode())
    decision = run(policy, "POST", "/notes", packed, **{"content-encoding": "gzip"})
    assert decision.reason == "syntax.schema_violation"
    ok = gzip.compress(json.dumps({"text": "ok"}).encode())
    assert run(policy, "POST", "/notes", ok, **{"content-encoding": "gzip"}).allowed


# ---- form bodies ----


def test_form_fields_are_validated_like_json(policy: Path) -> None:
    form = "application/x-www-form-urlencoded"
    assert run(policy, "POST", "/form", b"text=hello", form).allowed
    too_long = run(policy, "POST", "/form", b"text=hello+world+and+more", form)
    assert too_long.reason == "syntax.schema_violation"
    bad = run(policy, "POST", "/form", b"text=%zz", form)
    assert (bad.status, bad.reason) == (400, "syntax.form_malformed")
    many = run(policy, "POST", "/form", b"a=1&b=2&c=3&d=4&text=x", form)
    assert (many.status, many.reason) == (413, "syntax.form_too_many_fields")


# ---- multipart ----


def test_multipart_with_declared_fields(policy: Path) -> None:
    mime, body = multipart([("photo", "p.png", "image/png", PNG), ("caption", None, None, b"hi")])
    decision = run(policy, "POST", "/upload", body, mime)
    assert decision.allowed, decision.message
    assert decision.metadata["image"] == "png 64x48"


@pytest.mark.parametrize(
    ("fields", "status", "reason"),
    [
        ([("caption", None, None, b"hi")], 422, "syntax.missing_field"),
        ([("photo", "p.png", "image/png", PNG), ("other", None, None, b"x")], 422,
         "syntax.unexpected_field"),
        ([("photo", "p.gif", "image/gif", image_bytes("GIF"))], 415,
         "syntax.part_type_not_accepted"),
        ([("photo", "p.png", "image/png", JPEG)], 415, "syntax.part_type_mismatch"),
        ([("photo", "p.png", "image/png", PNG[:-20])], 422, "syntax.image_truncated"),
        ([(name, None, None, b"x") for name in "abcd"], 413, "syntax.multipart_too_many_parts"),
    ],
)  # fmt: skip
def test_multipart_refusals(
    policy: Path, fields: list[tuple[str, str | None, str | None, bytes]], status: int, reason: str
) -> None:
    mime, body = multipart(fields)
    decision = run(policy, "POST", "/upload", body, mime)
    assert (decision.status, decision.reason) == (status, reason), decision.message


def test_multipart_without_boundary(policy: Path) -> None:
    _, body = multipart([("photo", "p.png", "image/png", PNG)])
    decision = run(policy, "POST", "/upload", body, "multipart/form-data")
    assert (decision.status, decision.reason) == (400, "syntax.multipart_boundary_missing")


# ---- images in JSON ----


def test_data_urls_only_where_allowed(policy: Path) -> None:
    body = {"data": "data:image/png;base64," + b64(PNG)}
    assert run(policy, "POST", "/avatar", {"avatar": body}).allowed
    text = POLICY.replace("allow_data_url: true", "allow_data_url: false")
    strict = write_policy(policy.parent, text, "strict.yaml")
    refused = run(strict, "POST", "/avatar", {"avatar": body})
    assert refused.reason == "syntax.invalid_base64"


def test_base64_image_in_a_json_field(policy: Path) -> None:
    small = image_bytes("PNG", size=(32, 32))
    assert run(policy, "POST", "/avatar", {"avatar": {"data": b64(small)}}).allowed
    data_url = "data:image/png;base64," + b64(small)
    assert run(policy, "POST", "/avatar", {"avatar": {"data": data_url}}).allowed


@pytest.mark.parametrize(
    ("value", "status", "reason"),
    [
        ("iVBORw0KGgo=!!", 422, "syntax.invalid_base64"),
        ("iVBORw0KGgo", 422, "syntax.invalid_base64"),  # padding missing
        (b64(b"just text, not an image"), 415, "syntax.not_an_image"),
        (b64(JPEG), 415, "syntax.image_format_not_allowed"),
        (b64(image_bytes("PNG", size=(200, 10))), 413, "syntax.image_too_large"),
        (b64(png_declaring(50_000, 50_000)), 413, "syntax.image_too_large"),
        ("data:image/jpeg;base64," + b64(PNG), 415, "syntax.image_type_mismatch"),
        (42, 422, "syntax.image_missing"),
    ],
)
def test_base64_image_refusals(policy: Path, value: object, status: int, reason: str) -> None:
    decision = run(policy, "POST", "/avatar", {"avatar": {"data": value}})
    assert (decision.status, decision.reason) == (status, reason), decision.message


# ---- OpenAPI ----


def test_openapi_operation_parameters(policy: Path) -> None:
    ok = run(policy, "GET", "/shop/items/ABC", query="", **{"x-shop": "a"})
    assert ok.allowed, ok.message
    cases = [
        ("/shop/items/ABC?limit=3&tags=a&tags=b", {"x-shop": "a"}, 200, "allowed"),
        ("/shop/items/abc", {"x-shop": "a"}, 422, "syntax.parameter_violation"),
        ("/shop/items/ABC?limit=30", {"x-shop": "a"}, 422, "syntax.parameter_violation"),
        ("/shop/items/ABC?limit=x", {"x-shop": "a"}, 422, "syntax.parameter_violation"),
        ("/shop/items/ABC?limit=1&limit=2", {"x-shop": "a"}, 400, "syntax.invalid_parameter"),
        ("/shop/items/ABC?debug=1", {"x-shop": "a"}, 400, "syntax.unknown_parameter"),
        ("/shop/items/ABC", {}, 400, "syntax.missing_parameter"),
        ("/shop/items/ABC", {"x-shop": "c"}, 422, "syntax.parameter_violation"),
        ("/shop/nothing", {"x-shop": "a"}, 404, "syntax.operation_not_found"),
        ("/shop/items/%FF", {"x-shop": "a"}, 400, "syntax.invalid_parameter"),
        ("/shop/items/%41BC", {"x-shop": "a"}, 200, "allowed"),
    ]
    for path, headers, status, reason in cases:
        decision = run(policy, "GET", path, **headers)
        assert (decision.status, decision.reason) == (status, reason), (path, decision.message)
    not_allowed = run(policy, "DELETE", "/shop/items/ABC")
    assert (not_allowed.status, not_allowed.headers["allow"]) == (405, "GET, PUT")


def test_openapi_request_bodies_by_media_type(policy: Path) -> None:
    path = "/shop/items/ABC"
    assert run(policy, "PUT", path, {"name": "x", "note": None, "price": 1}).allowed
    zero_price = run(policy, "PUT", path, {"name": "x", "price": 0})
    assert violations(zero_price)[0] == {
        "pointer": "/price",
        "rule": "exclusiveMinimum",
        "message": violations(zero_price)[0]["message"],
    }
    assert run(policy, "PUT", path, {"name": "x", "extra": 1}).reason == "syntax.schema_violation"
    form = "application/x-www-form-urlencoded"
    assert run(policy, "PUT", path, b"count=3", form).allowed
    assert run(policy, "PUT", path, b"count=0", form).reason == "syntax.schema_violation"
    mime, body = multipart([("photo", "p.png", "image/png", PNG), ("count", None, None, b"2")])
    assert run(policy, "PUT", path, body, mime).allowed
    mime, body = multipart(
        [("photo", "p.png", None, png_declaring(5000, 5000)), ("count", None, None, b"1")]
    )
    assert run(policy, "PUT", path, body, mime).reason == "syntax.image_too_large"
    mime, body = multipart([("count", None, None, b"2")])
    assert run(policy, "PUT", path, body, mime).reason == "syntax.schema_violation"
    text = run(policy, "PUT", path, b"hi", "text/plain")
    assert (text.status, text.reason) == (415, "syntax.unsupported_media_type")
    assert "application/json" in text.headers["accept"]
    assert run(policy, "PUT", path).reason == "syntax.body_required"


# ---- LLM bodies and per-tier limits ----


def chat(content: str = "hi", messages: int = 1, **extra: object) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}] * messages,
        **extra,
    }


def test_builtin_chat_schema(policy: Path) -> None:
    key = {"x-api-key": PRO_KEY}
    assert run(policy, "POST", "/v1/chat/completions", chat(), **key).allowed
    bad = run(policy, "POST", "/v1/chat/completions", {"model": "m", "messages": []}, **key)
    assert violations(bad)[0] == {
        "pointer": "/messages",
        "rule": "minItems",
        "message": violations(bad)[0]["message"],
    }
    role = run(
        policy,
        "POST",
        "/v1/chat/completions",
        {"model": "m", "messages": [{"role": "wizard", "content": "x"}]},
        **key,
    )
    assert violations(role)[0]["pointer"] == "/messages/0/role"
    unknown = run(policy, "POST", "/v1/chat/completions", chat(frobnicate=True), **key)
    assert unknown.reason == "syntax.schema_violation" and "frobnicate" in unknown.message


@pytest.mark.parametrize(
    ("key", "body", "status", "reason"),
    [
        (PRO_KEY, chat(max_tokens=10_000), 200, "allowed"),
        (FREE_KEY, chat(max_tokens=65), 422, "syntax.max_tokens_too_high"),
        (FREE_KEY, chat(max_completion_tokens=100), 422, "syntax.max_tokens_too_high"),
        (FREE_KEY, chat(max_tokens=64), 200, "allowed"),
        (PRO_KEY, chat(messages=9), 413, "syntax.too_many_messages"),
        (TRIAL_KEY, chat(messages=3), 413, "syntax.too_many_messages"),
        (PRO_KEY, chat("x" * 101), 413, "syntax.message_too_long"),
        (PRO_KEY, chat("x" * 80, messages=2), 413, "syntax.prompt_too_long"),
        (TRIAL_KEY, chat(temperature=0.5), 422, "syntax.parameter_not_allowed"),
        (TRIAL_KEY, chat(max_tokens=5), 200, "allowed"),
    ],
)
def test_llm_limits_per_tier(
    policy: Path, key: str, body: dict[str, object], status: int, reason: str
) -> None:
    decision = run(policy, "POST", "/v1/chat/completions", body, **{"x-api-key": key})
    assert (decision.status, decision.reason) == (status, reason), decision.message


def test_multimodal_text_parts_count_toward_limits(policy: Path) -> None:
    parts = [{"type": "text", "text": "x" * 60}, {"type": "image_url", "image_url": {"url": "u"}}]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}] * 3}
    decision = run(policy, "POST", "/v1/chat/completions", body, **{"x-api-key": PRO_KEY})
    assert decision.reason == "syntax.prompt_too_long"
    assert decision.details == {"pointer": "", "tier": "pro", "limit": 150}


def test_anthropic_and_completions_schemas(policy: Path) -> None:
    message = {"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    assert run(policy, "POST", "/v1/messages", message).allowed
    no_max = run(policy, "POST", "/v1/messages", {**message, "max_tokens": None})
    assert no_max.reason == "syntax.schema_violation"
    system = run(policy, "POST", "/v1/messages", {**message, "system": "y" * 30})
    assert (system.reason, system.details and system.details["tier"]) == (
        "syntax.prompt_too_long",
        "anonymous",  # the anonymous principal's tier, limited by "*"
    )
    assert run(policy, "POST", "/v1/completions", {"model": "m", "prompt": "hi"}).allowed
    tokens = run(policy, "POST", "/v1/completions", {"model": "m", "prompt": [[1] * 6]})
    assert tokens.reason == "syntax.prompt_too_long"  # 6 token ids count as 24 characters


# ---- the policy: every problem at load, with its location ----


def test_schema_and_openapi_problems_are_reported_at_load(tmp_path: Path) -> None:
    broken = {"type": "object", "properties": {"a": {"$ref": "x.json"}}}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    (tmp_path / "invalid.json").write_text('{"type": "objekt"}')
    (tmp_path / "api.yaml").write_text("openapi: 3.1.0\ninfo: {title: t, version: '1'}\n")
    policy = write_policy(
        tmp_path,
        """
        version: 1
        syntax:
          schemas:
            broken: { file: broken.json }
            invalid: { file: invalid.json }
            missing: { file: nowhere.json }
            escape: { file: ../outside.json }
          openapi:
            api: { file: api.yaml }
        routes:
          - name: r
            match: { path: { prefix: / } }
            syntax: { json_schema: nope, openapi: other }
        """,
    )
    with pytest.raises(PolicyError) as raised:
        load_policy(policy)
    text = str(raised.value)
    for expected in (
        "syntax.schemas.broken.file",
        "x.json",
        "syntax.schemas.invalid.file",
        "syntax.schemas.missing.file",
        "syntax.schemas.escape.file",
        "syntax.openapi.api.file",
        "routes[0].syntax.json_schema: no schema is named 'nope'",
        "routes[0].syntax.openapi: no OpenAPI document is named 'other'",
    ):
        assert expected in text, (expected, text)
    assert all(problem.line for problem in raised.value.problems)


def test_multipart_text_fields_must_be_utf8(policy: Path) -> None:
    mime, body = multipart([("photo", "p.png", "image/png", PNG), ("count", None, None, b"\xff")])
    decision = run(policy, "PUT", "/shop/items/ABC", body, mime)
    assert (decision.status, decision.reason) == (400, "syntax.multipart_invalid_utf8")
