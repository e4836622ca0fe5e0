"""structlog set up for one JSON object per line, serialized with orjson.

Libraries (grpc, asyncio) report through the standard ``logging`` module, thread
excepthooks and ``sys.unraisablehook``; all three are forwarded here so that a log
collector never meets a bare traceback in the middle of the JSON stream."""

from __future__ import annotations

import logging
import sys
import threading
from typing import BinaryIO

import orjson
import structlog

_log = structlog.get_logger("authz_service")


class _ForwardToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        _log.log(
            record.levelno,
            "library_log",
            logger=record.name,
            message=record.getMessage(),
            exc_info=record.exc_info or False,
        )


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
    thread = args.thread.name if args.thread else None
    _log.error("thread_exception", thread=thread, exc_info=exc_info)


def _log_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    exc_info = (unraisable.exc_type, unraisable.exc_value, unraisable.exc_traceback)
    _log.error(
        "unraisable_exception",
        message=unraisable.err_msg or "Exception ignored",
        object=repr(unraisable.object),
        exc_info=exc_info,
    )


def configure_logging(stream: BinaryIO, level: str = "info") -> None:
    """Every log line (decisions included) goes to ``stream`` as one JSON object."""
    threshold = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.BytesLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries are chatty at INFO/DEBUG; their warnings and errors are what operators need.
    logging.basicConfig(
        handlers=[_ForwardToStructlog()], level=max(threshold, logging.WARNING), force=True
    )
    threading.excepthook = _log_thread_exception
    sys.unraisablehook = _log_unraisable
