"""The JSON Schema of the policy file, composed from each layer's own fragment."""

from __future__ import annotations

from typing import Any

from authz_service.layers.cost import settings as cost_settings
from authz_service.layers.identity import settings as identity_settings
from authz_service.layers.protocol import settings as protocol_settings
from authz_service.layers.routing import settings as routing_settings
from authz_service.layers.semantics import settings as semantics_settings
from authz_service.layers.syntax import settings as syntax_settings
from authz_service.policy.model import KNOWN_METHODS

_ROUTE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_HOST = r"^(\*\.)?[A-Za-z0-9.-]+(:[0-9]+)?$|^\[[0-9A-Fa-f:.]+\](:[0-9]+)?$"

_LAYERS: dict[str, Any] = {
    "protocol": protocol_settings.SCHEMA,
    "identity": identity_settings.ROUTE_SCHEMA,
    "syntax": syntax_settings.ROUTE_SCHEMA,
    "semantics": semantics_settings.ROUTE_SCHEMA,
    "cost": cost_settings.ROUTE_SCHEMA,
    "routing": routing_settings.ROUTE_SCHEMA,
}
"""Each layer's settings block; a route and ``defaults`` carry one of each."""

_PATH = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": 1,
    "additionalProperties": False,
    "properties": {
        "exact": {"type": "string", "pattern": "^/"},
        "prefix": {"type": "string", "pattern": "^/"},
        "template": {"type": "string", "pattern": "^/"},
    },
}

_ROUTE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "match"],
    "properties": {
        "name": {"type": "string", "pattern": _ROUTE_NAME},
        "match": {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "hosts": {"type": "array", "items": {"type": "string", "pattern": _HOST}},
                "methods": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": sorted(KNOWN_METHODS)},
                },
                "path": _PATH,
            },
        },
        **_LAYERS,
    },
}

POLICY_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "routes"],
    "properties": {
        "version": {"const": 1},
        "settings": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "decision_timeout_ms": {"type": "integer", "minimum": 1, "maximum": 60_000},
                "envoy_max_request_bytes": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": 64 * 1024 * 1024,
                },
            },
        },
        "identity": identity_settings.SECTION_SCHEMA,
        "syntax": syntax_settings.SECTION_SCHEMA,
        "semantics": semantics_settings.SECTION_SCHEMA,
        "cost": cost_settings.SECTION_SCHEMA,
        "routing": routing_settings.SECTION_SCHEMA,
        "defaults": {"type": "object", "additionalProperties": False, "properties": _LAYERS},
        "unmatched": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "properties": {
                "status": {"type": "integer", "minimum": 400, "maximum": 599},
                "route": {"type": "string", "pattern": _ROUTE_NAME},
            },
        },
        "routes": {"type": "array", "items": _ROUTE},
    },
}
