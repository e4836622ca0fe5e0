"""The one exception the syntax layer's body parsers raise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_STATUSES = frozenset({400, 413, 415})


class MalformedBody(Exception):
    """A body the syntax layer cannot decode; status is 400, 413 or 415."""

    status: int
    reason: str
    """Stable machine code without the layer prefix, e.g. ``multipart_malformed``."""
    message: str
    """Short human text naming the part or field; never echoes a value."""
    details: Mapping[str, Any] | None

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        if status not in _STATUSES:
            raise ValueError(f"MalformedBody status must be 400, 413 or 415, not {status}")
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details

    def __repr__(self) -> str:
        return f"MalformedBody({self.status}, {self.reason!r}, {self.message!r})"
