"""The ``input`` document Rego policies see, shaped like OPA-Envoy's so that existing
policies read the same paths (``input.attributes.request.http.method``,
``input.parsed_path``, ``input.parsed_body``…), plus what earlier layers learned."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from authz_service.layers.base import NO_JSON_BODY, Context

CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
"""Never handed to policies: the identity layer has verified them; use ``input.principal``.
Neither are the headers the upstream will not get (API-key headers, spoofed ``x-authz-*``)."""


def rego_input(ctx: Context) -> dict[str, Any]:
    view = ctx.view
    principal = ctx.principal
    estimate = ctx.token_estimate
    hidden = CREDENTIAL_HEADERS.union(ctx.headers_to_remove)
    path = view.path + (f"?{view.query}" if view.query else "")
    return {
        "attributes": {
            "request": {
                "http": {
                    "method": view.method,
                    "path": path,
                    "host": view.host,
                    "scheme": view.scheme,
                    "protocol": view.protocol,
                    "id": view.request_id,
                    "headers": {
                        name: value for name, value in view.headers.items() if name not in hidden
                    },
                    "size": view.full_body_size,
                }
            },
            "source": {"address": view.source.address, "principal": view.source.principal},
            "context_extensions": dict(view.context_extensions),
        },
        "parsed_path": [segment for segment in view.path.split("/") if segment],
        "parsed_query": parse_qs(view.query, keep_blank_values=True),
        "parsed_body": None if ctx.fields is NO_JSON_BODY else ctx.fields,
        "path_params": dict(ctx.path_params),
        "route": ctx.route.name if ctx.route is not None else None,
        "principal": None
        if principal is None
        else {
            "subject": principal.subject,
            "tenant": principal.tenant,
            "tier": principal.tier,
            "roles": sorted(principal.roles),
            "scopes": sorted(principal.scopes),
            "method": principal.method,
            "provider": principal.provider,
        },
        "token_estimate": None
        if estimate is None
        else {
            "model": estimate.model,
            "prompt_tokens": estimate.prompt,
            "output_tokens": estimate.output,
            "total_tokens": estimate.total,
        },
    }
