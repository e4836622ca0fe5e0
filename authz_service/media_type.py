"""Media ranges (``image/png``, ``image/*``, ``*/*``): one matcher for every layer."""

from __future__ import annotations

from collections.abc import Container


def ranges_matching(media_type: str) -> tuple[str, str, str]:
    """The ranges that cover ``media_type``, most specific first."""
    return media_type, media_type.split("/", 1)[0] + "/*", "*/*"


def in_ranges(media_type: str, ranges: Container[str]) -> bool:
    return any(candidate in ranges for candidate in ranges_matching(media_type))
