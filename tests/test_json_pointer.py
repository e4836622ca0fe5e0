"""RFC 6901 pointers as every layer reads them."""

from __future__ import annotations

import pytest

from authz_service.json_pointer import MISSING, escape, join, resolve

DOCUMENT = {"a/b": {"m~n": [10, None, {"": "empty key"}]}, "n": None}


@pytest.mark.parametrize(
    ("pointer", "expected"),
    [
        ("", DOCUMENT),
        ("/a~1b/m~0n/0", 10),
        ("/a~1b/m~0n/1", None),  # a JSON null is there
        ("/a~1b/m~0n/2/", "empty key"),
        ("/n", None),
        ("/missing", MISSING),
        ("/a~1b/m~0n/3", MISSING),
        ("/a~1b/m~0n/01", MISSING),  # no leading zeros
        ("/a~1b/m~0n/-", MISSING),
        ("/n/x", MISSING),
        ("no-slash", MISSING),
    ],
)
def test_resolve(pointer: str, expected: object) -> None:
    found = resolve(DOCUMENT, pointer)
    if expected is MISSING:
        assert found is MISSING
    else:
        assert found == expected


def test_escape_and_join_round_trip() -> None:
    assert escape("a/b~c") == "a~1b~0c"
    pointer = join(["a/b", "m~n", 2, ""])
    assert pointer == "/a~1b/m~0n/2/"
    assert resolve(DOCUMENT, pointer) == "empty key"
