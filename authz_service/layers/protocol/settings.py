"""Per-route settings of the protocol layer, and their part of the policy schema."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from authz_service.media_type import in_ranges

BodyRule = Literal["required", "optional", "forbidden"]
DuplicateKeys = Literal["reject", "last_wins"]

DEFAULT_MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class JsonLimits:
    max_depth: int = 64
    """Deepest nesting of arrays/objects; stops stack-exhausting payloads downstream."""
    max_elements: int = 100_000
    """Total values inside all arrays and objects; stops hash-flooding and huge trees."""
    duplicate_keys: DuplicateKeys = "reject"
    """A key twice in one object: parsers disagree on which wins, so the upstream and we
    could read different values. ``last_wins`` is what most parsers (and orjson) do."""
    max_number: float = float(2**53)
    """Largest magnitude of a number: beyond 2^53 integers lose precision as doubles,
    and integers beyond 64 bits silently become floats."""


DEFAULT_MAX_DECODED_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Decompression:
    encodings: frozenset[str] = frozenset()
    """Content codings undone before the body is checked; none by default (415)."""
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
    max_ratio: int = 100
    """Largest decoded size as a multiple of the compressed size: stops zip bombs early."""


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
    decompress: Decompression = field(default_factory=Decompression)

    def accepts(self, media_type: str) -> bool:
        return not self.content_types or in_ranges(media_type, self.content_types)


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
                "duplicate_keys": {"enum": ["reject", "last_wins"]},
                "max_number": {"type": "number", "exclusiveMinimum": 0},
            },
        },
        "strict_utf8": {"type": "boolean"},
        "decompress": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "encodings": {
                    "type": "array",
                    "items": {"enum": ["gzip", "deflate"]},
                    "uniqueItems": True,
                },
                "max_decoded_bytes": {"type": "integer", "minimum": 1, "maximum": 64 * 1024 * 1024},
                "max_ratio": {"type": "integer", "minimum": 1},
            },
        },
    },
}
"""The ``protocol:`` block of a route (and of ``defaults``) in the policy file."""


def build(raw: Mapping[str, Any]) -> ProtocolSettings:
    """Settings from an already schema-validated ``protocol:`` block."""
    base = ProtocolSettings()
    json_raw = raw.get("json", {})
    decompress_raw = raw.get("decompress", {})
    return ProtocolSettings(
        content_types=tuple(raw.get("content_types", base.content_types)),
        max_body_bytes=raw.get("max_body_bytes", base.max_body_bytes),
        body=raw.get("body", base.body),
        allow_partial_body=raw.get("allow_partial_body", base.allow_partial_body),
        json=JsonLimits(
            max_depth=json_raw.get("max_depth", base.json.max_depth),
            max_elements=json_raw.get("max_elements", base.json.max_elements),
            duplicate_keys=json_raw.get("duplicate_keys", base.json.duplicate_keys),
            max_number=float(json_raw.get("max_number", base.json.max_number)),
        ),
        strict_utf8=raw.get("strict_utf8", base.strict_utf8),
        decompress=Decompression(
            encodings=frozenset(decompress_raw.get("encodings", ())),
            max_decoded_bytes=decompress_raw.get(
                "max_decoded_bytes", base.decompress.max_decoded_bytes
            ),
            max_ratio=decompress_raw.get("max_ratio", base.decompress.max_ratio),
        ),
    )
