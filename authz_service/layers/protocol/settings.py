"""Per-route settings of the protocol layer, and their part of the policy schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

BodyRule = Literal["required", "optional", "forbidden"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_depth: int = 64
    """Deepest nesting of arrays/objects; stops stack-exhausting payloads downstream."""
    max_elements: int = 100_000
    """Total values inside all arrays and objects; stops hash-flooding and huge trees."""


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    content_types: tuple[str, ...] = ()
    """Accepted media types (``type/subtype`` or ``type/*``); empty accepts any."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body: BodyRule = "optional"
    allow_partial_body: bool = False
    """Whether a body Envoy truncated may pass (only for routes that never read the body)."""
    json: JsonLimits = field(default_factory=JsonLimits)
    strict_utf8: bool = True
    """Text bodies (JSON, ``text/*``, forms) must be valid UTF-8."""

    def accepts(self, media_type: str) -> bool:
        if not self.content_types:
            return True
        major = media_type.split("/", 1)[0]
        return any(
            accepted == media_type or accepted == f"{major}/*" or accepted == "*/*"
            for accepted in self.content_types
        )


_MEDIA_TYPE = r"^([a-z0-9!#$&^_.+-]+|\*)/([a-z0-9!#$&^_.+-]+|\*)$"

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "content_types": {
            "type": "array",
            "items": {"type": "string", "pattern": _MEDIA_TYPE},
            "uniqueItems": True,
        },
        "max_body_bytes": {"type": "integer", "minimum": 0, "maximum": 64 * 1024 * 1024},
        "body": {"enum": ["required", "optional", "forbidden"]},
        "allow_partial_body": {"type": "boolean"},
        "json": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_depth": {"type": "integer", "minimum": 1, "maximum": 1000},
                "max_elements": {"type": "integer", "minimum": 1},
            },
        },
        "strict_utf8": {"type": "boolean"},
    },
}
"""The ``protocol:`` block of a route (and of ``defaults``) in the policy file."""


def build(raw: Mapping[str, Any]) -> ProtocolSettings:
    """Settings from an already schema-validated ``protocol:`` block."""
    base = ProtocolSettings()
    json_raw = raw.get("json", {})
    return ProtocolSettings(
        content_types=tuple(raw.get("content_types", base.content_types)),
        max_body_bytes=raw.get("max_body_bytes", base.max_body_bytes),
        body=raw.get("body", base.body),
        allow_partial_body=raw.get("allow_partial_body", base.allow_partial_body),
        json=JsonLimits(
            max_depth=json_raw.get("max_depth", base.json.max_depth),
            max_elements=json_raw.get("max_elements", base.json.max_elements),
        ),
        strict_utf8=raw.get("strict_utf8", base.strict_utf8),
    )
