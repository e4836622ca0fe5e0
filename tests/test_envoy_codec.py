"""CheckRequest → RequestView and Decision → CheckResponse."""

from __future__ import annotations

import json

from envoy.config.core.v3.base_pb2 import HeaderValue, HeaderValueOption
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.rpc import code_pb2

from authz_service.decision import Decision
from authz_service.envoy_codec import check_response, request_view


def test_view_from_plain_headers_and_string_body() -> None:
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host = "post", "/v1/x?a=1&b=2", "API.local"
    http.headers.update({"Content-Type": "application/json", "x-request-id": "rid-1"})
    http.body = '{"é": 1}'
    request.attributes.source.address.socket_address.address = "10.0.0.7"
    request.attributes.source.address.socket_address.port_value = 5555
    request.attributes.source.principal = "spiffe://demo/sa/client"
    request.attributes.context_extensions["route_group"] = "chat"
    view = request_view(request)
    assert (view.method, view.path, view.query, view.host) == (
        "POST",
        "/v1/x",
        "a=1&b=2",
        "API.local",
    )
    assert view.headers["content-type"] == "application/json"
    assert view.content_type == "application/json"
    assert view.request_id == "rid-1"
    assert view.body == '{"é": 1}'.encode()
    assert view.source.address == "10.0.0.7:5555"
    assert view.source.principal == "spiffe://demo/sa/client"
    assert view.context_extensions == {"route_group": "chat"}
    assert not view.body_truncated


def test_view_prefers_raw_body_and_header_map() -> None:
    request = CheckRequest()
    http = request.attributes.request.http
    http.raw_body = b"\x89PNG\x00\xff"
    http.body = "ignored"
    for key, value in (
        ("accept", b"a"),
        ("Accept", b"b"),
        ("x-envoy-auth-partial-body", b"true"),
        ("content-length", b"123"),
    ):
        http.header_map.headers.append(HeaderValue(key=key, raw_value=value))
    view = request_view(request)
    assert view.body == b"\x89PNG\x00\xff"
    assert view.headers["accept"] == "a,b"
    assert view.body_truncated
    assert view.declared_body_size == 123
    assert view.full_body_size == 123


def test_allow_response_overwrites_headers_and_carries_metadata() -> None:
    decision = Decision(
        decision_id="d1",
        allowed=True,
        status=200,
        layer=None,
        reason="allowed",
        message="allowed",
        headers={"x-authz-decision-id": "d1"},
        headers_to_remove=("x-authz-tier",),
        response_headers={"x-authz-decision-id": "d1"},
        metadata={"decision_id": "d1"},
    )
    response = check_response(decision)
    assert response.status.code == code_pb2.OK
    ok = response.ok_response
    assert ok.headers[0].header.key == "x-authz-decision-id"
    assert ok.headers[0].append_action == HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
    assert list(ok.headers_to_remove) == ["x-authz-tier"]
    assert ok.response_headers_to_add[0].header.value == "d1"
    assert response.dynamic_metadata["decision_id"] == "d1"


def test_deny_response_has_json_body_status_and_headers() -> None:
    decision = Decision(
        decision_id="d2",
        allowed=False,
        status=405,
        layer="protocol",
        reason="protocol.method_not_allowed",
        message="GET is not allowed",
        headers={"allow": "POST", "x-authz-decision-id": "d2"},
        metadata={"decision_id": "d2"},
    )
    response = check_response(decision)
    assert response.status.code == code_pb2.PERMISSION_DENIED
    denied = response.denied_response
    assert denied.status.code == 405
    headers = {option.header.key: option.header.value for option in denied.headers}
    assert headers == {
        "allow": "POST",
        "x-authz-decision-id": "d2",
        "content-type": "application/json",
    }
    assert json.loads(denied.body) == {
        "error": {
            "code": "protocol.method_not_allowed",
            "message": "GET is not allowed",
            "decision_id": "d2",
        }
    }
