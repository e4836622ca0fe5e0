"""Small helpers shared by the tests: policies on disk, HTTP over loopback, CheckRequests."""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf import json_format

from authz_service.decision import Decision
from authz_service.envoy_codec import request_view
from authz_service.layers.identity.api_keys import hash_key
from authz_service.pipeline import Pipeline
from authz_service.policy import load_policy

DEV_SET = Path(__file__).parents[2] / "shared" / "datasets" / "prompt_injection" / "dev.jsonl"
"""The labelled prompt-injection development set beside the project (absent in a lone clone)."""

TIER_KEYS = {"free": "k-free-0123456789", "pro": "k-pro-0123456789", "trial": "k-trial-0123456789"}
"""An API key per demo tier, for policies made by :func:`api_key_identity`."""


def api_key_identity(
    tenants: Mapping[str, str] | None = None, roles: Mapping[str, list[str]] | None = None
) -> str:
    """A policy's ``identity:`` section (indented for :func:`write_policy`): one API-key
    principal per tier of :data:`TIER_KEYS`, subject = tier, on the ``x-api-key`` header."""
    lines = [
        "    identity:",
        "      api_keys:",
        "        - name: keys",
        "          header: x-api-key",
    ]
    lines.append("          principals:")
    for tier, key in TIER_KEYS.items():
        lines += [
            f"            - subject: {tier}",
            f"              tier: {tier}",
            f"              tenant: {(tenants or {}).get(tier, 'default')}",
            f"              roles: {list((roles or {}).get(tier, []))}",
            f'              keys: [{{ id: {tier}-key, hash: "{hash_key(key)}" }}]',
        ]
    return "\n".join(lines)


def write_policy(directory: Path, text: str, name: str = "policy.yaml") -> Path:
    file = directory / name
    file.write_text(textwrap.dedent(text), encoding="utf-8")
    return file


def check_request(
    method: str = "GET",
    path: str = "/",
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    host: str = "api.local",
) -> CheckRequest:
    request = CheckRequest()
    http_request = request.attributes.request.http
    http_request.method = method
    http_request.path = path
    http_request.host = host
    http_request.headers.update({"content-length": str(len(body)), **(headers or {})})
    http_request.raw_body = body
    return request


async def decide(policy_file: Path, request: CheckRequest) -> Decision:
    return await Pipeline(load_policy(policy_file)).decide(request_view(request))


def decide_chat(pipeline: Pipeline, tier: str, body: bytes) -> Decision:
    """``pipeline``'s decision on a JSON chat completion sent with ``tier``'s API key
    (:data:`TIER_KEYS`, as :func:`api_key_identity` declares them)."""
    request = check_request(
        "POST",
        "/v1/chat/completions",
        headers={"content-type": "application/json", "x-api-key": TIER_KEYS[tier]},
        body=body,
    )
    return asyncio.run(pipeline.decide(request_view(request)))


def check_request_json(request: CheckRequest) -> str:
    return json_format.MessageToJson(request, indent=None)


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    cafile: Path | None = None,
    timeout: float = 10,
) -> Reply:
    scheme, _, rest = url.partition("://")
    authority, _, path = rest.partition("/")
    host, _, port = authority.partition(":")
    connection: http.client.HTTPConnection
    if scheme == "https":
        context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
        connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, "/" + path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(
            response.status,
            {name.lower(): value for name, value in response.getheaders()},
            response.read(),
        )
    finally:
        connection.close()
