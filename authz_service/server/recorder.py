"""Opt-in capture of CheckRequests, for replay with ``authz-service check``.

Captured requests contain headers and bodies (tokens, prompts): only for debugging, and
the service warns at start. Writes happen on one worker thread, off the event loop and
in arrival order.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from envoy.service.auth.v3.external_auth_pb2 import CheckRequest
from google.protobuf import json_format


class RequestRecorder:
    def __init__(self, file: Path) -> None:
        self._stream = file.open("a", encoding="utf-8")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")

    def record(self, request: CheckRequest) -> None:
        line = json_format.MessageToJson(request, indent=None) + "\n"
        asyncio.get_running_loop().run_in_executor(self._writer, self._write, line)

    def _write(self, line: str) -> None:
        self._stream.write(line)
        self._stream.flush()

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._stream.close()
