"""Undo a ``Content-Encoding`` within a size and a ratio limit, or refuse it.

A compressed body is the classic way past a size limit: a few kilobytes of gzip can
inflate to gigabytes. ``zlib``'s ``max_length`` bounds the work and the memory to the
limit itself, so a bomb costs no more than a legitimate body of the largest allowed size.
"""

from __future__ import annotations

import zlib

from authz_service.decision import Denial
from authz_service.layers.protocol.settings import Decompression

_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
IDENTITY = ("", "identity")


def decode_body(body: bytes, header: str, settings: Decompression) -> bytes | Denial:
    """``body`` with the one coding of ``header`` undone, or the denial saying why not."""
    coding = header.strip().lower()
    if coding in IDENTITY:
        return body
    name = "gzip" if coding == "x-gzip" else coding
    if name not in settings.encodings or "," in coding:
        accepted = ", ".join(sorted(settings.encodings)) or "identity"
        return Denial(
            415,
            "protocol.unsupported_content_encoding",
            f"content encoding {coding[:32]!r} is not accepted here; accepted: {accepted}",
            headers={"accept-encoding": accepted},
        )
    limit = min(settings.max_decoded_bytes, settings.max_ratio * max(len(body), 1))
    inflater = zlib.decompressobj(_WBITS[coding])
    try:
        decoded = inflater.decompress(body, limit + 1)
    except zlib.error:
        return _undecodable(name)
    if len(decoded) > limit:
        which = (
            f"{settings.max_decoded_bytes} bytes"
            if limit == settings.max_decoded_bytes
            else f"{settings.max_ratio} times its compressed size"
        )
        return Denial(
            413,
            "protocol.decoded_body_too_large",
            f"the {name}-decoded request body exceeds {which}",
        )
    if not inflater.eof or inflater.unused_data:
        return _undecodable(name)  # truncated stream, or data after it (a second member)
    return decoded


def _undecodable(name: str) -> Denial:
    return Denial(
        400,
        "protocol.invalid_content_encoding",
        f"request body is not a complete, single {name} stream",
    )
