"""The real service process over gRPC: health, reflection, limits, reload, shutdown."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from authz_service.devstack.stack import Ports, Stack, service_health
from tests.helpers import check_request, write_policy

POLICY = """
    version: 1
    settings: { envoy_max_request_bytes: 1024 }
    routes:
      - name: chat
        match: { path: { exact: /v1/chat/completions }, methods: [POST] }
        protocol: { content_types: [application/json], max_body_bytes: 1024 }
"""
JSON = {"content-type": "application/json"}


def json_log(stack: Stack) -> list[dict[str, Any]]:
    """The service's output, which must be one JSON object per line, tracebacks included."""
    lines = stack.log_path("authz").read_text().splitlines()
    for line in lines:
        assert line.startswith("{"), f"not a JSON log line: {line!r}"
    return [json.loads(line) for line in lines]


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Stack]:
    stack = Stack(tmp_path, Ports.free(), write_policy(tmp_path, POLICY))
    try:
        stack.start_service()
        yield stack
    finally:
        stack.stop()


def stub(stack: Stack) -> Iterator[external_auth_pb2_grpc.AuthorizationStub]:
    with grpc.insecure_channel(f"127.0.0.1:{stack.ports.authz}") as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)


def check_status(stack: Stack, path: str = "/v1/chat/completions", body: bytes = b"{}") -> int:
    for authorization in stub(stack):
        response = authorization.Check(
            check_request("POST", path, headers=JSON, body=body), timeout=5
        )
        return 200 if response.HasField("ok_response") else response.denied_response.status.code
    raise AssertionError("unreachable")


def test_health_is_serving_for_the_service_and_overall(service: Stack) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    assert service_health(service.ports.authz) == serving
    authorization = "envoy.service.auth.v3.Authorization"
    assert service_health(service.ports.authz, authorization) == serving


def test_reflection_lists_the_services(service: Stack) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{service.ports.authz}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    names = {entry.name for entry in reply.list_services_response.service}
    assert {"envoy.service.auth.v3.Authorization", "grpc.health.v1.Health"} <= names


def test_a_message_beyond_the_largest_body_is_refused(service: Stack) -> None:
    huge = b"{" + b" " * (2 * 1024 * 1024) + b"}"
    with pytest.raises(grpc.RpcError) as caught:
        check_status(service, body=huge)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert check_status(service) == 200  # and the service keeps serving


def test_reload_swaps_a_good_policy_and_keeps_the_old_on_a_bad_one(service: Stack) -> None:
    assert check_status(service, "/v1/embeddings") == 404
    service.policy.write_text(
        POLICY.replace("/v1/chat/completions", "/v1/embeddings").replace("\n    ", "\n")
    )
    service.process("authz").send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while check_status(service, "/v1/embeddings") != 200:
        assert time.monotonic() < deadline, "reload did not take effect"
        time.sleep(0.05)
    service.policy.write_text("version: 1\nroutes: [ {name: x} ]\n")
    service.process("authz").send_signal(signal.SIGHUP)
    time.sleep(0.5)
    assert check_status(service, "/v1/embeddings") == 200
    log = json_log(service)
    rejected = [line for line in log if line["event"] == "reload_rejected"]
    assert rejected and "routes[0]" in rejected[0]["problems"][0]


def test_sigterm_finishes_in_flight_checks_then_exits_cleanly(service: Stack) -> None:
    """No decision the service made is lost: every request it logged got its answer."""

    def one_check(number: int) -> bool:
        request = check_request(
            "POST",
            "/v1/chat/completions",
            headers={**JSON, "x-request-id": f"r{number}"},
            body=b"{}",
        )
        try:
            for authorization in stub(service):
                return bool(authorization.Check(request, timeout=5).HasField("ok_response"))
        except grpc.RpcError:
            return False  # refused once shutdown began: Envoy answers 503 and may retry
        return False

    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        futures = {f"r{number}": pool.submit(one_check, number) for number in range(300)}
        while not any(future.done() for future in futures.values()):
            time.sleep(0.001)
        exit_code = service.stop_service()
        answered = {request_id for request_id, future in futures.items() if future.result()}
    assert exit_code == 0
    log = json_log(service)
    decided = {line["request_id"] for line in log if line["event"] == "decision"}
    assert answered, "no check was answered before shutdown"
    assert decided <= answered
    assert log[-1]["event"] == "stopped"


def test_a_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "authz_service",
                "serve",
                "--config",
                str(write_policy(tmp_path, POLICY)),
                "--listen",
                f"127.0.0.1:{port}",
                "--metrics-listen",
                "127.0.0.1:0",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(("required", "expected"), [(True, "NOT_SERVING"), (False, "SERVING")])
def test_health_waits_for_signing_keys_unless_told_not_to(
    tmp_path: Path, required: bool, expected: str
) -> None:
    import subprocess
    import sys

    policy = write_policy(
        tmp_path,
        f"""
        version: 1
        identity:
          jwt:
            - name: down
              issuer: http://127.0.0.1:1
              audiences: [x]
              algorithms: [RS256]
              keys: {{ oidc_discovery: true }}
              fetch_timeout_s: 0.2
              required_at_start: {str(required).lower()}
        routes:
          - {{ name: any, match: {{ path: {{ prefix: / }} }} }}
        """,
    )
    port = Ports.free().authz
    process = subprocess.Popen(
        [sys.executable, "-m", "authz_service", "serve", "--config", str(policy),
         "--listen", f"127.0.0.1:{port}", "--metrics-listen", "127.0.0.1:0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while service_health(port) is None:
            assert time.monotonic() < deadline, "the service never answered"
            time.sleep(0.1)
        time.sleep(1)  # past the first fetch and the readiness report
        assert service_health(port) == health_pb2.HealthCheckResponse.ServingStatus.Value(expected)
    finally:
        process.terminate()
        process.wait(timeout=15)


LIBRARY_FAILURES = """
import asyncio, sys, threading
from authz_service.observability.logging import configure_logging
configure_logging(sys.stdout.buffer)

async def failing_callback() -> None:
    def spurious() -> None:  # what grpc's completion queue raises now and then
        raise BlockingIOError(11, "Resource temporarily unavailable")
    asyncio.get_running_loop().call_soon(spurious)
    await asyncio.sleep(0.01)

asyncio.run(failing_callback())
thread = threading.Thread(target=lambda: 1 / 0)
thread.start()
thread.join()

class Finalizer:
    def __del__(self) -> None:
        raise ValueError("in a finalizer")

Finalizer()
"""


def test_library_tracebacks_become_json_log_lines() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_FAILURES],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert result.stderr == ""
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == [
        "library_log",
        "thread_exception",
        "unraisable_exception",
    ]
    assert lines[0]["logger"] == "asyncio"
    assert "BlockingIOError" in lines[0]["exception"]
    assert "ZeroDivisionError" in lines[1]["exception"]
    assert "in a finalizer" in lines[2]["exception"]
    assert all(line["level"] == "error" for line in lines)
