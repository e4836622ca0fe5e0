"""Envoy's gRPC access-log service (``envoy.service.accesslog.v3``): Envoy streams every
routed request's upstream cluster, status and timing here, and each becomes an observation
of that provider's health for the routing layer. The only module that reads these Envoy
types."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import structlog
from envoy.data.accesslog.v3 import accesslog_pb2
from envoy.service.accesslog.v3 import als_pb2, als_pb2_grpc

from authz_service.feedback import FeedbackHub
from authz_service.layers.cost.layer import RESERVATION_HEADER, TOKENS_HEADER
from authz_service.layers.routing.health import Observation

ACCESS_LOG_SERVICE = als_pb2.DESCRIPTOR.services_by_name["AccessLogService"].full_name

_UPSTREAM_FAILURES = (
    "no_healthy_upstream",
    "upstream_request_timeout",
    "upstream_remote_reset",
    "upstream_connection_failure",
    "upstream_connection_termination",
    "upstream_overflow",
    "upstream_retry_limit_exceeded",
    "upstream_max_stream_duration_reached",
    "upstream_protocol_error",
)

_log = structlog.get_logger("authz_service.access_log")


def observation(entry: accesslog_pb2.HTTPAccessLogEntry) -> Observation | None:
    """The provider (Envoy's upstream cluster), the status and the time to the upstream's
    first byte (a long streamed answer is not a slow provider); ``None`` for a request that
    never had an upstream, or that the client abandoned (that says nothing of the provider)."""
    common = entry.common_properties
    if not common.upstream_cluster:
        return None
    flags = common.response_flags
    upstream_failed = any(getattr(flags, name) for name in _UPSTREAM_FAILURES)
    client_left = flags.downstream_connection_termination or flags.downstream_remote_reset
    if client_left and not upstream_failed:
        return None
    timing = (
        common.time_to_first_upstream_rx_byte
        if common.HasField("time_to_first_upstream_rx_byte")
        else common.duration
    )
    return Observation(
        provider=common.upstream_cluster,
        status=entry.response.response_code.value,
        latency_ms=timing.seconds * 1000 + timing.nanos / 1e6,
        upstream_failed=upstream_failed,
    )


def finished_reservation(entry: accesslog_pb2.HTTPAccessLogEntry) -> tuple[str, int] | None:
    """(reservation id, reserved tokens) of a request the cost layer admitted, from the
    request headers Envoy logs (``additional_request_headers_to_log``)."""
    headers = entry.request.request_headers
    reservation = headers.get(RESERVATION_HEADER, "")
    tokens = headers.get(TOKENS_HEADER, "")
    if not reservation or not tokens.isdigit():
        return None
    return reservation, int(tokens)


class AccessLogServicer(als_pb2_grpc.AccessLogServiceServicer):  # type: ignore[misc]
    def __init__(self, hub: FeedbackHub) -> None:
        self._hub = hub
        self.streams = 0

    async def StreamAccessLogs(
        self,
        request_iterator: AsyncIterator[als_pb2.StreamAccessLogsMessage],
        context: grpc.aio.ServicerContext[
            als_pb2.StreamAccessLogsMessage, als_pb2.StreamAccessLogsResponse
        ],
    ) -> als_pb2.StreamAccessLogsResponse:
        """One stream per Envoy worker; Envoy opens a new one whenever one ends."""
        self.streams += 1
        node = ""
        try:
            async for message in request_iterator:
                if message.HasField("identifier") and not node:
                    node = message.identifier.node.id
                    _log.info("access_log_stream", node=node, log_name=message.identifier.log_name)
                for entry in message.http_logs.log_entry:
                    found = observation(entry)
                    if found is not None:
                        self._hub.observe(found)
                    reservation = finished_reservation(entry)
                    if reservation is not None:
                        self._hub.finished(*reservation)
        finally:
            self.streams -= 1
        return als_pb2.StreamAccessLogsResponse()
