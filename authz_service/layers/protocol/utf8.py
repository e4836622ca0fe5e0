"""Strict UTF-8: a body that claims to be text must be exactly that."""

from __future__ import annotations

from authz_service.decision import Denial


def utf8_denial(body: bytes) -> Denial | None:
    """The denial naming the first bad byte, or ``None`` when ``body`` is valid UTF-8."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as bad:
        return Denial(
            400,
            "protocol.invalid_utf8",
            f"request body is not valid UTF-8 at byte {bad.start}",
            details={"position": bad.start},
        )
    return None
