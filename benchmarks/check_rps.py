"""`make bench`: the service's Check RPS and latency against a trivial servicer.

Each server runs alone on core 0; h2load (one process, HTTP/2, gRPC frames) loads it
from core 1, so the load generator is not the bottleneck. The same CheckRequest (a chat
completion, ~2.6 KB, as Envoy sends it) goes to both. The figure that matters is the
ratio: the noise of the machine cancels out.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz_service.devstack.idp import ensure_idp_keys, mint_token, public_jwks
from authz_service.devstack.stack import REPO, Ports
from authz_service.envoy_codec import request_view
from authz_service.pipeline import Pipeline
from authz_service.policy import load_policy
from benchmarks import layer_cost, quota_cost, routing_cost

DURATION_S = int(os.environ.get("BENCH_SECONDS", "8"))
CLIENTS, STREAMS = (
    int(os.environ.get("BENCH_CLIENTS", "1")),
    int(os.environ.get("BENCH_STREAMS", "8")),
)
CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check"


BENCH_POLICY = Path(__file__).with_name("policy.yaml")
ISSUER = "https://bench.local"


def bench_policy(workdir: Path) -> Path:
    """The bench policy in ``workdir``, beside a JWKS file of freshly made keys."""
    keys = workdir / "idp"
    ensure_idp_keys(keys)
    (workdir / "jwks.json").write_text(json.dumps(public_jwks(keys)))
    policy = workdir / "policy.yaml"
    shutil.copyfile(BENCH_POLICY, policy)
    return policy


def chat_check_request(token: str) -> CheckRequest:
    messages = [
        {"role": "system", "content": "You are a helpful assistant for a travel agency. " * 6},
        {"role": "user", "content": "Plan a three day trip to Lisbon with museums. " * 20},
    ]
    body = (
        '{"model":"gpt-4o-mini","max_tokens":256,"temperature":0.2,"messages":'
        + str(messages).replace("'", '"')
        + "}"
    ).encode()
    request = CheckRequest()
    http = request.attributes.request.http
    http.method, http.path, http.host, http.protocol = (
        "POST",
        "/v1/chat/completions",
        "api",
        "HTTP/1.1",
    )
    http.headers.update(
        {
            ":authority": "api.example.com",
            ":method": "POST",
            ":path": "/v1/chat/completions",
            "content-type": "application/json",
            "content-length": str(len(body)),
            "user-agent": "openai-python/1.55.0",
            "accept": "application/json",
            "authorization": f"Bearer {token}",
            "x-request-id": "8c1f1a4e-2b9d-4a8f-9c8e-1d2f3a4b5c6d",
            "x-forwarded-proto": "https",
            "x-envoy-internal": "true",
        }
    )
    http.raw_body = body
    request.attributes.source.address.socket_address.address = "10.1.2.3"
    request.attributes.source.address.socket_address.port_value = 51234
    return request


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    failed: int


def grpc_frame(message: bytes) -> bytes:
    return b"\x00" + len(message).to_bytes(4, "big") + message


def wait_serving(port: int, request: CheckRequest) -> bool:
    """Poll until the server answers one Check; return whether it allowed it."""
    deadline = time.monotonic() + 20
    while True:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = external_auth_pb2_grpc.AuthorizationStub(channel)
                return bool(stub.Check(request, timeout=1).HasField("ok_response"))
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def load(name: str, port: int, payload: Path, workdir: Path) -> Result:
    log_file = workdir / f"{name}.tsv"
    output = subprocess.run(
        [
            "taskset",
            "-c",
            "1",
            "h2load",
            "-c",
            str(CLIENTS),
            "-m",
            str(STREAMS),
            f"-D{DURATION_S}",
            "--warm-up-time=2",
            "-d",
            str(payload),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            f"--log-file={log_file}",
            f"http://127.0.0.1:{port}{CHECK_PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output).group(1))  # type: ignore[union-attr]
    failed = int(re.search(r"(\d+) failed", output).group(1))  # type: ignore[union-attr]
    latencies = sorted(int(line.split("\t")[2]) for line in log_file.read_text().splitlines())
    quantiles = statistics.quantiles(latencies, n=100)
    return Result(name, rps, quantiles[49] / 1000, quantiles[98] / 1000, failed)


def decision_us(policy: Path, requests: list[CheckRequest], rounds: int) -> float:
    """Mean time of one decision without gRPC (parse, view, pipeline; no logging), cycling
    through ``requests``: one request repeats its token (cache hits after the first);
    ``rounds == len(requests)`` distinct tokens are each verified once."""
    pipeline = Pipeline(load_policy(policy))
    wires = [request.SerializeToString() for request in requests]

    async def run() -> float:
        await pipeline.start()
        try:
            started = time.perf_counter()
            for index in range(rounds):
                wire = wires[index % len(wires)]
                await pipeline.decide(request_view(CheckRequest.FromString(wire)))
            return (time.perf_counter() - started) / rounds * 1e6
        finally:
            await pipeline.stop()

    return asyncio.run(run())


def main() -> int:
    if shutil.which("h2load") is None:
        print("h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 1
    ports = Ports.free()
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        policy = bench_policy(workdir)
        token = mint_token(workdir / "idp", issuer=ISSUER, tier="pro")
        request = chat_check_request(token)
        payload = workdir / "check.bin"
        payload.write_bytes(grpc_frame(request.SerializeToString()))
        servers = {
            "trivial servicer": (ports.hosted, ["-m", "benchmarks.trivial_servicer",
                                                f"127.0.0.1:{ports.hosted}"]),
            "authz-service": (ports.authz, ["-m", "authz_service", "serve", "--config",
                                            str(policy), "--listen", f"127.0.0.1:{ports.authz}",
                                            "--metrics-listen", f"127.0.0.1:{ports.metrics}"]),
        }  # fmt: skip
        for name, (port, arguments) in servers.items():
            with (workdir / f"{name}.log").open("wb") as log:
                server = subprocess.Popen(
                    ["taskset", "-c", "0", sys.executable, *arguments],
                    cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                )  # fmt: skip
                try:
                    if not wait_serving(port, request):
                        print(f"{name} denied the benchmark request", file=sys.stderr)
                        return 1
                    results.append(load(name, port, payload, workdir))
                finally:
                    server.terminate()
                    server.wait(timeout=15)
        cached_us = decision_us(policy, [request], 20_000)
        fresh = [
            chat_check_request(mint_token(workdir / "idp", issuer=ISSUER, subject=f"user-{n}"))
            for n in range(300)
        ]
        fresh_us = decision_us(policy, fresh, len(fresh))
    baseline, service = results
    print(
        f"\nCheck over gRPC, {len(request.SerializeToString())} B chat CheckRequest with an RS256 "
        f"token, h2load -c{CLIENTS} -m{STREAMS} for {DURATION_S}s, server pinned to one core\n"
    )
    print(f"{'server':<18}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'failed':>8}")
    for result in results:
        print(
            f"{result.name:<18}{result.rps:>10.0f}{result.p50_ms:>10.2f}"
            f"{result.p99_ms:>10.2f}{result.failed:>8}"
        )
    print(
        f"\nratio authz-service / trivial servicer: {service.rps / baseline.rps:.2f} "
        "(DESIGN.md asks for at least 0.50)"
    )
    print("\npipeline alone, in process, per decision:")
    print(f"  repeated token (verification cache hit): {cached_us:8.1f} µs")
    print(f"  new token each time (RS256 verification): {fresh_us:8.1f} µs")
    print(f"  the cache makes a repeated token {fresh_us / cached_us:.1f}x cheaper")
    layer_cost.report()
    quota_cost.report()
    routing_cost.report()
    return 0 if service.failed == 0 and baseline.failed == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
