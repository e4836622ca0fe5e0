"""Layer 0, protocol: re-check what every later layer depends on.

Envoy already enforced TLS and edge limits; this layer makes sure that the request is
one the route can take at all: a known route and method, an accepted content type, a
whole body within its size, well-formed JSON and UTF-8. It parses a JSON body once and
hands it on, so no later layer parses again.
"""

from __future__ import annotations

from authz_service.decision import Denial
from authz_service.layers.base import Context, LayerName
from authz_service.layers.protocol.content_encoding import decode_body
from authz_service.layers.protocol.json_body import parse_json
from authz_service.layers.protocol.settings import ProtocolSettings
from authz_service.layers.protocol.utf8 import utf8_denial
from authz_service.policy.model import Unmatched

INTERNAL_HEADER_PREFIX = "x-authz-"
"""Headers with this prefix come only from us; a client's copy is never passed on."""
_JSON_SUFFIX = "+json"
_TEXT_TYPES = frozenset({"application/x-www-form-urlencoded", "application/xml"})
_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii"})


class ProtocolLayer:
    name: LayerName = "protocol"

    def __init__(self, unmatched: Unmatched) -> None:
        self._unmatched = unmatched

    async def check(self, ctx: Context) -> Denial | None:
        view = ctx.view
        if not view.method or not view.path.startswith("/"):
            return Denial(
                400,
                "protocol.incomplete_request",
                "the request has no method or no absolute path",
            )
        if view.malformed_headers:
            return Denial(
                400,
                "protocol.invalid_header_encoding",
                "header values are not valid UTF-8: " + ", ".join(view.malformed_headers),
            )
        if ctx.route is None:
            return self._no_route(ctx)
        ctx.headers_to_remove.extend(
            name for name in view.headers if name.startswith(INTERNAL_HEADER_PREFIX)
        )
        return self._check_body(ctx, ctx.route.protocol)

    def _no_route(self, ctx: Context) -> Denial:
        if ctx.methods_on_path:
            allowed = ", ".join(sorted(ctx.methods_on_path))
            return Denial(
                405,
                "protocol.method_not_allowed",
                f"{ctx.view.method} is not allowed on this path; allowed: {allowed}",
                headers={"allow": allowed},
            )
        return Denial(
            self._unmatched.status,
            "protocol.route_not_found",
            "no route of the policy matches this request",
        )

    def _check_body(self, ctx: Context, settings: ProtocolSettings) -> Denial | None:
        view = ctx.view
        size = view.full_body_size
        if size > settings.max_body_bytes:
            return Denial(
                413,
                "protocol.body_too_large",
                f"request body of {size} bytes exceeds this route's limit of "
                f"{settings.max_body_bytes} bytes",
            )
        if view.body_truncated and not settings.allow_partial_body:
            return Denial(
                413,
                "protocol.body_truncated",
                "request body is larger than what the edge buffers for inspection",
            )
        has_body = size > 0
        if settings.body == "required" and not has_body:
            return Denial(400, "protocol.body_required", "this route needs a request body")
        if settings.body == "forbidden" and has_body:
            return Denial(400, "protocol.body_forbidden", "this route takes no request body")
        if not has_body:
            return None
        media_type = view.content_type
        if not media_type or not settings.accepts(media_type):
            return _unsupported(media_type, settings)
        if view.body_truncated:
            return None  # a partial body cannot be parsed; the route said it does not need it
        body = decode_body(view.body, view.headers.get("content-encoding", ""), settings.decompress)
        if isinstance(body, Denial):
            return body
        ctx.body = body
        if media_type == "application/json" or media_type.endswith(_JSON_SUFFIX):
            parsed = parse_json(body, settings.json)
            if isinstance(parsed, Denial):
                return parsed
            ctx.json_body = ctx.fields = parsed
        elif settings.strict_utf8 and _is_text(media_type):
            return _check_utf8(body, view.headers.get("content-type", ""))
        return None


def _unsupported(media_type: str, settings: ProtocolSettings) -> Denial:
    accepted = ", ".join(settings.content_types)
    what = f"content type {media_type}" if media_type else "a body without content-type"
    return Denial(
        415,
        "protocol.unsupported_media_type",
        f"{what} is not accepted here; accepted: {accepted}",
        headers={"accept": accepted},
    )


def _is_text(media_type: str) -> bool:
    return media_type.startswith("text/") or media_type in _TEXT_TYPES


def _check_utf8(body: bytes, content_type: str) -> Denial | None:
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if key.strip().lower() == "charset" and charset not in _UTF8_CHARSETS:
            return Denial(
                415,
                "protocol.unsupported_charset",
                f"charset {charset} is not accepted; send UTF-8",
            )
    return utf8_denial(body)
