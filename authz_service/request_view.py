"""The read-only view of one request that every layer sees.

It is built once from Envoy's ``CheckRequest`` (see :mod:`authz_service.envoy_codec`), so
no layer ever touches gRPC types, and none can change what another layer saw.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Peer:
    """The client side of the connection, as Envoy saw it."""

    address: str = ""
    """``ip:port`` of the downstream peer (or a pipe path)."""
    ip: str = ""
    """The peer's IP address alone: what per-address limits count by."""
    principal: str = ""
    """The verified client certificate's URI SAN (else DNS SAN, else subject), when mTLS is on."""
    certificate: str = ""
    """The URL-encoded PEM client certificate, when Envoy is told to include it."""


@dataclass(frozen=True, slots=True)
class RequestView:
    """One HTTP request as the layers see it. Header names are lowercase."""

    method: str = ""
    path: str = ""
    """The path without the query string."""
    query: str = ""
    """The raw query string, without the leading ``?``."""
    host: str = ""
    scheme: str = ""
    protocol: str = ""
    request_id: str = ""
    """Envoy's ``x-request-id`` (generated at the edge)."""
    headers: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    body: bytes = b""
    body_truncated: bool = False
    """Envoy sent only the first part of a larger body (``x-envoy-auth-partial-body``)."""
    declared_body_size: int | None = None
    """The size the client declared (``Content-Length``), if any."""
    source: Peer = field(default_factory=Peer)
    context_extensions: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    """Per-route key/values from Envoy's ``ExtAuthzPerRoute.check_settings``."""
    malformed_headers: tuple[str, ...] = ()
    """Names of headers whose value was not valid UTF-8 (their values are dropped)."""

    @property
    def content_type(self) -> str:
        """The media type without parameters, lowercased (``""`` when absent)."""
        raw = self.headers.get("content-type", "")
        return raw.split(";", 1)[0].strip().lower()

    @property
    def full_body_size(self) -> int:
        """The largest size we know of: the bytes received or the declared length."""
        return max(len(self.body), self.declared_body_size or 0)
