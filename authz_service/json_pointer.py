"""RFC 6901 JSON pointers: the one resolver and escaper every layer uses (schema
violations, image fields, rule subjects, injection pointers, OpenAPI references)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class _Missing:
    """Nothing at that pointer (distinct from a JSON ``null``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def escape(token: str | int) -> str:
    """One reference token: ``~`` → ``~0``, ``/`` → ``~1``."""
    return str(token).replace("~", "~0").replace("/", "~1")


def join(path: Iterable[str | int]) -> str:
    """The pointer of a path of keys and indexes (``""`` is the whole document)."""
    return "".join("/" + escape(token) for token in path)


def resolve(document: Any, pointer: str) -> Any:
    """The value at ``pointer`` in ``document``, or :data:`MISSING`. Array indexes are
    decimal without leading zeros, as RFC 6901 says."""
    if not pointer:
        return document
    if not pointer.startswith("/"):
        return MISSING
    node = document
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if key not in node:
                return MISSING
            node = node[key]
        elif isinstance(node, list):
            if not key.isdigit() or (len(key) > 1 and key[0] == "0") or int(key) >= len(node):
                return MISSING
            node = node[int(key)]
        else:
            return MISSING
    return node
