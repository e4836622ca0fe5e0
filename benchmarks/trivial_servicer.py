"""The baseline: a grpc.aio ext_authz servicer that allows everything and does nothing else.

DESIGN.md measured ~10,500 RPS for it on one core; the real service is judged by its
ratio to this, measured in the same run on the same machine.
"""

from __future__ import annotations

import asyncio
import sys

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2

_ALLOW = external_auth_pb2.CheckResponse(
    status=status_pb2.Status(code=code_pb2.OK), ok_response=external_auth_pb2.OkHttpResponse()
)


class AllowAll(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        return _ALLOW


async def serve(address: str) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)])
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AllowAll(), server)
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
