"""Parse a JSON body once, strictly, within nesting and size limits."""

from __future__ import annotations

from typing import Any

import orjson

from authz_service.decision import Denial
from authz_service.layers.protocol.settings import JsonLimits
from authz_service.layers.protocol.utf8 import utf8_denial


def parse_json(body: bytes, limits: JsonLimits) -> Any | Denial:
    """The parsed document, or the denial that names what is wrong with it.

    orjson is strict JSON (no NaN/Infinity, no trailing commas, UTF-8 only) and 3x faster
    than :mod:`json` on chat bodies (DESIGN.md); its own nesting cap is 1024.
    """
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return _parse_denial(body, exc)
    return _check_shape(document, limits)


def _parse_denial(body: bytes, exc: orjson.JSONDecodeError) -> Denial:
    not_utf8 = utf8_denial(body)
    if not_utf8 is not None:
        return not_utf8
    if exc.msg == "depth limit exceeded":
        return _too_deep(1024)
    return Denial(
        400,
        "protocol.invalid_json",
        f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        details={"line": exc.lineno, "column": exc.colno, "position": exc.pos},
    )


def _check_shape(document: Any, limits: JsonLimits) -> Any | Denial:
    elements = 0
    stack: list[tuple[Any, int]] = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        if depth > limits.max_depth:
            return _too_deep(limits.max_depth)
        elements += len(children)
        if elements > limits.max_elements:
            return Denial(
                413,
                "protocol.json_too_many_elements",
                f"request body has more than {limits.max_elements} JSON values",
            )
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return document


def _too_deep(max_depth: int) -> Denial:
    return Denial(
        400,
        "protocol.json_too_deep",
        f"request body nests JSON arrays/objects deeper than {max_depth} levels",
    )
