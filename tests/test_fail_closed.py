"""Whatever breaks inside the pipeline ends as an in-band 503, never a gRPC error."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz_service.decision import Decision, Denial
from authz_service.envoy_codec import request_view
from authz_service.layers.base import Context, LayerName
from authz_service.layers.protocol import ProtocolLayer
from authz_service.pipeline import Pipeline
from authz_service.policy import Policy, load_policy
from authz_service.request_view import RequestView
from authz_service.server.authorization import AuthorizationServicer
from tests.helpers import check_request, write_policy

POLICY = """
    version: 1
    settings: { decision_timeout_ms: 50 }
    routes:
      - { name: any, match: { path: { prefix: / } } }
"""


class Exploding:
    """A layer with a bug."""

    name: LayerName = "identity"

    async def check(self, ctx: Context) -> Denial | None:
        raise KeyError("a bug")


class Stuck:
    """A layer waiting on a dependency that never answers."""

    name: LayerName = "cost"

    async def check(self, ctx: Context) -> Denial | None:
        await asyncio.sleep(10)
        return None


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    return load_policy(write_policy(tmp_path, POLICY))


class Collect:
    def __init__(self) -> None:
        self.seen: list[Decision] = []

    def observe(self, view: RequestView, decision: Decision, latency_ns: int) -> None:
        self.seen.append(decision)


def test_an_exception_becomes_a_503_denial(policy: Policy) -> None:
    observer = Collect()
    pipeline = Pipeline(policy, (observer,), layers=[ProtocolLayer(policy.unmatched), Exploding()])
    decision = asyncio.run(pipeline.decide(request_view(check_request("GET", "/x"))))
    assert (decision.allowed, decision.status, decision.reason) == (False, 503, "internal.error")
    assert decision.layer == "identity"
    assert decision.headers["x-authz-decision-id"] == decision.decision_id
    assert observer.seen == [decision]


def test_the_deadline_becomes_a_503_denial(policy: Policy) -> None:
    pipeline = Pipeline(policy, layers=[Stuck()])
    decision = asyncio.run(
        asyncio.wait_for(pipeline.decide(request_view(check_request("GET", "/x"))), timeout=2)
    )
    assert (decision.status, decision.reason, decision.layer) == (503, "internal.timeout", "cost")


async def _check_over_grpc(pipeline: Pipeline, request: CheckRequest) -> object:
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(
        AuthorizationServicer(pipeline), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            return await stub.Check(request, timeout=5)
    finally:
        await server.stop(None)


def test_check_over_grpc_never_raises(policy: Policy) -> None:
    pipeline = Pipeline(policy, layers=[Exploding()])
    response = asyncio.run(_check_over_grpc(pipeline, check_request("GET", "/x")))
    assert response.denied_response.status.code == 503  # type: ignore[attr-defined]
    assert b"internal.error" in response.denied_response.body.encode()  # type: ignore[attr-defined]


def test_a_failing_observer_still_answers_in_band(policy: Policy) -> None:
    """An observer that fails (e.g. a full disk under the log) must not raise through Check."""

    class BrokenObserver:
        def observe(self, view: RequestView, decision: Decision, latency_ns: int) -> None:
            raise OSError("disk full")

    pipeline = Pipeline(policy, (BrokenObserver(),))
    response = asyncio.run(_check_over_grpc(pipeline, check_request("GET", "/x")))
    assert response.denied_response.status.code == 503  # type: ignore[attr-defined]
