"""Small helpers shared by the tests: policies on disk, HTTP over loopback, CheckRequests."""

from __future__ import annotations

import http.client
import json
import ssl
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf import json_format

from authz_service.decision import Decision
from authz_service.envoy_codec import request_view
from authz_service.pipeline import Pipeline
from authz_service.policy import load_policy


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
