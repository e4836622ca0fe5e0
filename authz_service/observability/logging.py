"""structlog set up for one JSON object per line, serialized with orjson."""

from __future__ import annotations

import logging
from typing import BinaryIO

import orjson
import structlog


def configure_logging(stream: BinaryIO, level: str = "info") -> None:
    """Every log line (decisions included) goes to ``stream`` as one JSON object."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.BytesLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
