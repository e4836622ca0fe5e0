"""What a layer can say (``Denial``) and what the pipeline answers (``Decision``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from authz_service.layers.base import LayerName

_NO_HEADERS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Denial:
    """A layer's refusal: the HTTP status the client gets and a stable machine code."""

    status: int
    reason: str
    """Stable machine code, ``<layer>.<what>``, e.g. ``protocol.invalid_json``."""
    message: str
    """Human text naming what is wrong; never echoes secrets or large values."""
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    """Headers the client needs, e.g. ``Allow``, ``Retry-After``, ``WWW-Authenticate``."""
    details: Mapping[str, Any] | None = None
    """Structured detail for the client (e.g. the JSON parse position)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The single outcome of the pipeline for one request."""

    decision_id: str
    allowed: bool
    status: int
    """The HTTP status the client gets on denial (200 when allowed)."""
    layer: LayerName | None
    """Which layer decided a denial; ``None`` for an allow or an unmatched default."""
    reason: str
    message: str
    route: str | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    """Allowed: headers added to the upstream request. Denied: headers of the denial."""
    headers_to_remove: tuple[str, ...] = ()
    """Allowed only: request headers removed before the upstream sees them."""
    response_headers: Mapping[str, str] = field(default_factory=lambda: _NO_HEADERS)
    """Allowed only: headers added to the response the client gets."""
    details: Mapping[str, Any] | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    """Flat dynamic metadata for Envoy (access log, later filters): decision id, principal."""

    def error_body(self) -> dict[str, Any]:
        """The JSON body of a denial, as DESIGN.md fixes it."""
        error: dict[str, Any] = {
            "code": self.reason,
            "message": self.message,
            "decision_id": self.decision_id,
        }
        if self.details:
            error["details"] = dict(self.details)
        return {"error": error}

    def summary(self) -> dict[str, Any]:
        """The decision as ``authz-service check`` prints it."""
        return {
            "decision_id": self.decision_id,
            "allowed": self.allowed,
            "status": self.status,
            "layer": self.layer,
            "reason": self.reason,
            "message": self.message,
            "route": self.route,
            "headers": dict(self.headers),
            "headers_to_remove": list(self.headers_to_remove),
            "response_headers": dict(self.response_headers),
            **({"details": dict(self.details)} if self.details else {}),
        }
