"""The ``serve`` process: gRPC server, health, reflection, metrics, reload and shutdown."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import structlog
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from authz_service.feedback import FeedbackHub
from authz_service.layers.cost.backend import open_backend
from authz_service.observability.decision_log import FLUSH_INTERVAL_S, DecisionLog
from authz_service.observability.metrics import Metrics, serve_metrics
from authz_service.pipeline import Pipeline
from authz_service.policy import PolicyError, load_policy
from authz_service.server.access_log import ACCESS_LOG_SERVICE, AccessLogServicer
from authz_service.server.authorization import AuthorizationServicer
from authz_service.server.recorder import RequestRecorder

AUTHORIZATION_SERVICE = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_GRPC_OVERHEAD_BYTES = 1024 * 1024
"""Room for headers and attributes on top of the largest body a CheckRequest carries."""

_log = structlog.get_logger("authz_service.server")


@dataclass(frozen=True, slots=True)
class ServeOptions:
    config: Path
    listen: str = "127.0.0.1:9191"
    metrics_listen: str = "127.0.0.1:9464"
    grace_period_s: float = 10.0
    redis_url: str | None = None
    redis_cluster: bool = False
    record: Path | None = None


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)


class Service:
    """One serving process and everything it owns."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        self.decision_log = DecisionLog(sys.stdout.buffer)
        self._observers = (self.decision_log, self.metrics)
        policy = load_policy(options.config)
        self.quota = open_backend(options.redis_url, options.redis_cluster)
        self.feedback = FeedbackHub()
        self.access_log = AccessLogServicer(self.feedback)
        self.metrics.readings["authz_access_log_observations_total"] = (
            "counter",
            "Upstream requests Envoy's access-log stream reported (provider health input).",
            lambda: self.feedback.observations,
        )
        self.metrics.readings["authz_access_log_streams"] = (
            "gauge",
            "Access-log streams from Envoy open now.",
            lambda: self.access_log.streams,
        )
        self._max_message_bytes = policy.max_body_bytes + _GRPC_OVERHEAD_BYTES
        self._recorder = RequestRecorder(options.record) if options.record else None
        self.authorization = AuthorizationServicer(
            Pipeline(policy, self._observers, quota=self.quota, feedback=self.feedback),
            self._recorder,
        )
        self.health = HealthServicer()
        self._stopping = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.so_reuseport", 1),
            ]
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self.authorization, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        als_pb2_grpc.add_AccessLogServiceServicer_to_server(self.access_log, server)
        reflection.enable_server_reflection(
            (
                AUTHORIZATION_SERVICE,
                ACCESS_LOG_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        try:
            server.add_insecure_port(self.options.listen)
        except RuntimeError as exc:  # grpc's way of saying the address is taken or invalid
            raise OSError(f"cannot listen on {self.options.listen}") from exc
        metrics_host, metrics_port = split_host_port(self.options.metrics_listen)
        metrics_server = await serve_metrics(self.metrics, metrics_host, metrics_port)
        # grpc's HealthServicer starts out SERVING for "": not before the pipeline is ready.
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        await server.start()
        self._announce_store()
        pipeline = self.authorization.pipeline
        await pipeline.start()
        if self._recorder is not None:
            _log.warning(
                "recording_requests",
                file=str(self.options.record),
                note="captures contain headers and bodies: tokens and prompts",
            )
        readiness = asyncio.create_task(self._report_readiness())
        flushing = asyncio.create_task(self._flush_decision_log())
        _log.info(
            "serving",
            listen=self.options.listen,
            metrics=self.options.metrics_listen,
            policy=str(self.options.config),
            max_message_bytes=self._max_message_bytes,
        )
        self._install_signal_handlers()
        await self._stopping.wait()
        readiness.cancel()
        flushing.cancel()
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        _log.info("stopping", grace_period_s=self.options.grace_period_s)
        await server.stop(self.options.grace_period_s)
        metrics_server.close()
        await self.authorization.pipeline.stop()
        await self.quota.store.close()
        if self._recorder is not None:
            self._recorder.close()
        self.decision_log.flush()
        _log.info("stopped")

    def stop(self) -> None:
        self._stopping.set()

    async def reload(self) -> None:
        """Swap in the policy file's current content, or keep the old one if it is bad.

        The new pipeline starts (fetches its keys) before it takes traffic, and the old one
        keeps serving until then."""
        try:
            policy = load_policy(self.options.config)
        except PolicyError as exc:
            _log.error("reload_rejected", problems=[str(problem) for problem in exc.problems])
            return
        if policy.max_body_bytes + _GRPC_OVERHEAD_BYTES > self._max_message_bytes:
            _log.warning("reload_body_limit_needs_restart", max_body_bytes=policy.max_body_bytes)
        replacement = Pipeline(policy, self._observers, quota=self.quota, feedback=self.feedback)
        await replacement.start()
        previous, self.authorization.pipeline = self.authorization.pipeline, replacement
        await previous.stop()
        _log.info("reloaded", policy=str(self.options.config), ready=replacement.ready)

    async def _flush_decision_log(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            self.decision_log.flush()

    async def _report_readiness(self) -> None:
        """SERVING while the pipeline has what it needs (e.g. signing keys), else NOT_SERVING."""
        reported: bool | None = None
        while True:
            ready = self.authorization.pipeline.ready
            if ready != reported:
                status = health_pb2.HealthCheckResponse
                await self._set_health(status.SERVING if ready else status.NOT_SERVING)
                _log.info("health", serving=ready)
                reported = ready
            await asyncio.sleep(0.2)

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus) -> None:
        for service in ("", AUTHORIZATION_SERVICE):
            await self.health.set(service, status)

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self._schedule_reload)

    def _schedule_reload(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _announce_store(self) -> None:
        if self.options.redis_url:
            where = urlsplit(self.options.redis_url)
            _log.info("store", backend=self.quota.name, host=where.hostname, port=where.port)
        else:
            _log.warning(
                "store",
                backend="embedded",
                note="no REDIS_URL: quota state lives in this process (one replica)",
            )


async def serve(options: ServeOptions) -> None:
    await Service(options).run()
