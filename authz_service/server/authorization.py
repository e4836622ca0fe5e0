"""The Envoy ``envoy.service.auth.v3.Authorization`` servicer."""

from __future__ import annotations

import grpc
import structlog
from envoy.service.auth.v3 import external_auth_pb2_grpc
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest, CheckResponse

from authz_service.envoy_codec import check_response, request_view
from authz_service.pipeline import Pipeline, internal_denial, new_decision_id
from authz_service.server.recorder import RequestRecorder

_log = structlog.get_logger("authz_service.server")


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """Answers every Check in-band: a bug here must still end as a denial, not a gRPC error."""

    def __init__(self, pipeline: Pipeline, recorder: RequestRecorder | None = None) -> None:
        self.pipeline = pipeline
        """Swapped whole on policy reload; a request keeps the pipeline it started with."""
        self._recorder = recorder

    async def Check(
        self, request: CheckRequest, context: grpc.aio.ServicerContext
    ) -> CheckResponse:
        try:
            if self._recorder is not None:
                self._recorder.record(request)
            decision = await self.pipeline.decide(request_view(request))
            return check_response(decision)
        except Exception:
            decision_id = new_decision_id()
            _log.exception("check_failed", decision_id=decision_id)
            return check_response(
                internal_denial(decision_id, None, "internal.error", "authorization failed")
            )
