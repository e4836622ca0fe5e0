"""The strict multipart/form-data and urlencoded form parsers of the syntax layer.

Bodies are shaped as real clients send them: curl 7.88 and requests 2.32 bodies captured on
the wire, urllib3 2.x's encoder reproduced byte for byte, and browser (WebKit/Gecko) bodies.
Every refusal asserts its exact reason and status.
"""

from __future__ import annotations

import contextlib
import random
import re
import time
import urllib.parse
from collections.abc import Sequence

import pytest

from authz_service.layers.syntax.body_errors import MalformedBody
from authz_service.layers.syntax.form import FormLimits, parse_form
from authz_service.layers.syntax.multipart import (
    MultipartLimits,
    Part,
    boundary_of,
    parse_multipart,
)

LIMITS = MultipartLimits()
B = "e2eaeb4004525ad5ec4143a3ea7aabaa"
CT = f"multipart/form-data; boundary={B}"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))

Field = tuple[str, str | bytes | tuple[str, bytes, str | None]]


def urllib3_body(fields: Sequence[Field], boundary: str = B) -> tuple[bytes, str]:
    """What ``urllib3.encode_multipart_formdata`` (urllib3 2.x, used by ``requests``) sends:
    names and filenames quoted, with ``"``, CR and LF percent-encoded (WHATWG HTML), headers
    UTF-8, a Content-Type only for files given one."""

    def param(key: str, value: str) -> str:
        return f'{key}="{value.translate({10: "%0A", 13: "%0D", 34: "%22"})}"'

    body = b""
    for name, value in fields:
        disposition = f"form-data; {param('name', name)}"
        content_type: str | None = None
        if isinstance(value, tuple):
            filename, data, content_type = value
            disposition += f"; {param('filename', filename)}"
        else:
            data = value.encode() if isinstance(value, str) else value
        lines = [f"Content-Disposition: {disposition}"]
        if content_type:
            lines.append(f"Content-Type: {content_type}")
        lines.append("\r\n")
        body += f"--{boundary}\r\n".encode() + "\r\n".join(lines).encode() + data + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def raw_body(*parts: bytes, boundary: str = B, end: bytes = b"--\r\n") -> bytes:
    """Parts given as header lines + blank line + data, between standard delimiters."""
    dash = f"--{boundary}".encode()
    return b"".join(dash + b"\r\n" + part + b"\r\n" for part in parts) + dash + end


def field(name: str, data: bytes = b"x") -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + data


def refused(body: bytes, content_type: str = CT, limits: MultipartLimits = LIMITS) -> MalformedBody:
    with pytest.raises(MalformedBody) as caught:
        parse_multipart(body, content_type, limits)
    return caught.value


def reason(body: bytes, content_type: str = CT, limits: MultipartLimits = LIMITS) -> str:
    return refused(body, content_type, limits).reason


# --- what real clients send ---------------------------------------------------------------

CURL_CT = "multipart/form-data; boundary=------------------------4b0ec501237eed88"
CURL_BODY = (  # curl -F model=resnet -F 'image=@cat.png;type=image/png' -F 'note=héllo "q"'
    b"--------------------------4b0ec501237eed88\r\n"
    b'Content-Disposition: form-data; name="model"\r\n\r\nresnet\r\n'
    b"--------------------------4b0ec501237eed88\r\n"
    b'Content-Disposition: form-data; name="image"; filename="cat.png"\r\n'
    b"Content-Type: image/png\r\n\r\nPNGDATA\x00\x01\r\n"
    b"--------------------------4b0ec501237eed88\r\n"
    b'Content-Disposition: form-data; name="note"\r\n\r\nh\xc3\xa9llo "q"\r\n'
    b"--------------------------4b0ec501237eed88--\r\n"
)
REQUESTS_CT = "multipart/form-data; boundary=041595e7a7d01e79649a889115a020b6"
REQUESTS_BODY = (  # requests.post(url, files={"image": open("cat.png", "rb")})
    b"--041595e7a7d01e79649a889115a020b6\r\n"
    b'Content-Disposition: form-data; name="image"; filename="cat.png"\r\n\r\n'
    b"PNGDATA\x00\x01\r\n"
    b"--041595e7a7d01e79649a889115a020b6--\r\n"
)


def test_curl_form_as_captured_on_the_wire() -> None:
    assert parse_multipart(CURL_BODY, CURL_CT, LIMITS) == (
        Part("model", None, None, b"resnet"),
        Part("image", "cat.png", "image/png", b"PNGDATA\x00\x01"),
        Part("note", None, None, 'héllo "q"'.encode()),
    )


def test_requests_file_without_a_type_as_captured_on_the_wire() -> None:
    assert parse_multipart(REQUESTS_BODY, REQUESTS_CT, LIMITS) == (
        Part("image", "cat.png", None, b"PNGDATA\x00\x01"),
    )


def test_urllib3_encoding_with_awkward_names_and_binary_data() -> None:
    tricky = b"\r\n--" + B[:-1].encode() + b"\r\n- -" + B.encode() + b"\r\n\r\n--\r\n"
    body, content_type = urllib3_body(
        [
            ("model", "resnet-50"),
            ("image", ("cat.png", PNG, "image/png")),
            ('quote"d\r\nname', "v"),
            ("naïve 名前", "ünïcödé"),
            ("raw", tricky),
            ("empty", ""),
            ("doc", ("C:\\Users\\me\\a b.json", b'{"a": 1}', "application/json; charset=utf-8")),
        ]
    )
    assert parse_multipart(body, content_type, LIMITS) == (
        Part("model", None, None, b"resnet-50"),
        Part("image", "cat.png", "image/png", PNG),
        Part("quote%22d%0D%0Aname", None, None, b"v"),
        Part("naïve 名前", None, None, "ünïcödé".encode()),
        Part("raw", None, None, tricky),
        Part("empty", None, None, b""),
        Part("doc", "C:\\Users\\me\\a b.json", "application/json", b'{"a": 1}'),
    )


def test_browser_form_with_an_empty_file_input() -> None:
    boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    body = raw_body(
        field("prompt", b"a cat"),
        b'Content-Disposition: form-data; name="image"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n",
        boundary=boundary,
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    assert parse_multipart(body, content_type, LIMITS) == (
        Part("prompt", None, None, b"a cat"),
        Part("image", "", "application/octet-stream", b""),
    )


def test_gecko_boundary_and_multiple_files_when_duplicates_are_allowed() -> None:
    boundary = "----geckoformboundary4f5e1a7c2b9d8e3f"
    files = [(f"img{i}.png", PNG[: 10 + i]) for i in range(3)]
    body, content_type = urllib3_body(
        [("images", (name, data, "image/png")) for name, data in files], boundary
    )
    parts = parse_multipart(body, content_type, MultipartLimits(allow_duplicate_fields=True))
    assert [(p.name, p.filename, p.data) for p in parts] == [("images", n, d) for n, d in files]


def test_preamble_epilogue_and_transport_padding_are_allowed() -> None:
    dash = f"--{B}".encode()
    body = (
        b"This is a preamble; --" + B[:8].encode() + b" is not a delimiter.\r\n"
        + dash + b" \t \r\n" + field("a", b"1") + b"\r\n"
        + dash + b"\t\r\n" + field("b", b"2") + b"\r\n"
        + dash + b"--  \r\nepilogue, ignored: " + dash + b"\r\nnot a part"
    )  # fmt: skip
    assert [(p.name, p.data) for p in parse_multipart(body, CT, LIMITS)] == [
        ("a", b"1"),
        ("b", b"2"),
    ]


@pytest.mark.parametrize("end", [b"--", b"--\t ", b"--\r\n\r\n"], ids=["bare", "padded", "crlf"])
def test_the_close_delimiter_may_end_the_body_without_a_line_break(end: bytes) -> None:
    assert parse_multipart(raw_body(field("a"), end=end), CT, LIMITS) == (
        Part("a", None, None, b"x"),
    )


def test_headers_are_case_insensitive_unquoted_and_others_are_ignored() -> None:
    body = raw_body(
        b"CONTENT-DISPOSITION: Form-Data; NAME=model_id; FileName=cat.png\r\n"
        b"content-type:IMAGE/PNG ; Charset=binary\r\n"
        b"Content-Transfer-Encoding: binary\r\n"
        b"X-Anything: whatever it says\r\n\r\ndata"
    )
    assert parse_multipart(body, CT, LIMITS) == (Part("model_id", "cat.png", "image/png", b"data"),)


def test_quoted_parameters_unescape_only_quote_and_backslash() -> None:
    # As werkzeug reads them: `\"` and `\\` are escapes; any other backslash is literal.
    body = raw_body(
        b'Content-Disposition: form-data; name="a\\"b\\\\c"; filename="C:\\dir\\f.txt"\r\n\r\n'
    )
    part = parse_multipart(body, CT, LIMITS)[0]
    assert (part.name, part.filename) == ('a"b\\c', "C:\\dir\\f.txt")


@pytest.mark.parametrize(
    ("disposition", "filename"),
    [
        ("form-data; name=f; filename*=UTF-8''%C3%A9t%C3%A9.png", "été.png"),
        ("form-data; name=f; filename=ete.png; filename*=utf-8''%C3%A9t%C3%A9.png", "été.png"),
        ("form-data; name=f; filename*=utf-8'fr'%C3%A9t%C3%A9.png; filename=ete.png", "été.png"),
        ("form-data; name=f; filename*=ISO-8859-1''%E9t%E9.png", "été.png"),
        ("form-data; name=f; filename*=UTF-8''plain.png", "plain.png"),
    ],
)
def test_rfc_5987_filenames_win_over_plain_ones(disposition: str, filename: str) -> None:
    body = raw_body(f"Content-Disposition: {disposition}\r\n\r\n".encode())
    assert parse_multipart(body, CT, LIMITS)[0].filename == filename


def test_a_part_without_headers_of_its_own_but_data() -> None:
    # The data of a part keeps leading and trailing CRLFs, and "--" that is not the boundary.
    data = b"\r\n--\r\n-- " + B.encode()[:-1] + b"\r\n"
    assert parse_multipart(raw_body(field("a", data)), CT, LIMITS)[0].data == data


# --- the Content-Type header ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        (CT, B),
        (f"Multipart/Form-Data;Boundary={B}", B),
        (f"multipart/form-data; charset=utf-8; boundary={B}; x=y", B),
        (f"multipart/form-data; boundary={B};", B),
        ('multipart/form-data; boundary="a b\'()+_,-./:=?"', "a b'()+_,-./:=?"),
        ('multipart/form-data; boundary="1"', "1"),
        ("multipart/form-data; boundary=" + "x" * 70, "x" * 70),
        ('multipart/form-data; boundary="uuid-4f5e"', "uuid-4f5e"),
    ],
)
def test_boundary_of_accepts_token_and_quoted_boundaries(header: str, boundary: str) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize(
    "header",
    [
        "multipart/form-data",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=" + "x" * 71,
        'multipart/form-data; boundary="ends with space "',
        'multipart/form-data; boundary="a@b"',
        "multipart/form-data; boundary=a/b",  # werkzeug would read "a": must be quoted
        "multipart/form-data; boundary=a b",
        "multipart/form-data; boundary = abc",
        'multipart/form-data; boundary="abc',
        "multipart/form-data; boundary=abc; boundary=abd",
        "multipart/form-data; boundary=abc\x00",
    ],
)
def test_boundary_of_refuses_missing_or_invalid_boundaries(header: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        boundary_of(header)
    assert (caught.value.status, caught.value.reason) == (400, "multipart_boundary_missing")


@pytest.mark.parametrize(
    "header", ["", "text/plain; boundary=abc", "multipart/mixed; boundary=abc", "multipart/"]
)
def test_boundary_of_refuses_other_media_types_with_415(header: str) -> None:
    with pytest.raises(MalformedBody) as caught:
        boundary_of(header)
    assert (caught.value.status, caught.value.reason) == (415, "multipart_not_form_data")


def test_parse_multipart_checks_the_header_first() -> None:
    assert reason(raw_body(field("a")), "multipart/form-data") == "multipart_boundary_missing"


# --- malformed bodies ----------------------------------------------------------------------

DASH = f"--{B}".encode()
CD_A = b'Content-Disposition: form-data; name="a"\r\n'


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"a=1&b=2", id="no-delimiter"),
        pytest.param(DASH[:-1] + b"\r\n" + field("a") + b"\r\n" + DASH[:-1] + b"--", id="near"),
        pytest.param(DASH + b"--\r\n", id="only-close-delimiter"),
        pytest.param(b"preamble" + raw_body(field("a")), id="boundary-mid-line-in-preamble"),
        pytest.param(b"preamble\n" + raw_body(field("a")), id="boundary-after-bare-lf"),
        pytest.param(DASH + b"x\r\n" + field("a") + b"\r\n" + DASH + b"--", id="garbage-open"),
        pytest.param(raw_body(field("a"), end=b"--garbage"), id="garbage-after-close"),
        pytest.param(raw_body(field("a"), end=b"-"), id="half-close"),
        pytest.param(raw_body(field("a"), end=b""), id="ends-after-delimiter"),
        pytest.param(raw_body(field("a"), end=b"\r\n"), id="no-close-delimiter"),
        pytest.param(raw_body(field("a"))[:-10], id="truncated-close"),
        pytest.param(DASH + b"\r\n" + field("a", b"x" * 100), id="truncated-data"),
        pytest.param(DASH + b"\r\n" + CD_A, id="truncated-headers"),
        pytest.param(DASH + b"\r\n" + DASH + b"--\r\n", id="empty-part"),
        pytest.param(raw_body(field("a", b"x\n" + DASH + b"\n" + field("b"))), id="lf-delimiter"),
        pytest.param(raw_body(field("a", b"x" + DASH + b"\r\n")), id="boundary-mid-line"),
        pytest.param(raw_body(field("a", b"\r\n" + DASH + b"-x")), id="boundary-prefix-line"),
        pytest.param(raw_body(CD_A + b"data"), id="no-header-terminator"),
        pytest.param(raw_body(CD_A + b"\r\ndata").replace(b"\r\n", b"\n"), id="lf-everywhere"),
        pytest.param(raw_body(CD_A + b"X-Note\r\n\r\n"), id="line-without-colon"),
        pytest.param(raw_body(CD_A + b"X-Note : v\r\n\r\n"), id="space-before-colon"),
        pytest.param(raw_body(CD_A + b" folded\r\n\r\n"), id="folded-header"),
        pytest.param(raw_body(CD_A + b"X-\xffNote: v\r\n\r\n"), id="non-utf8-name"),
        pytest.param(raw_body(b'Content-Disposition: form-data; name="\xe9"\r\n\r\n'), id="latin1"),
        pytest.param(raw_body(b'Content-Disposition: form-data; name="a\x00"\r\n\r\n'), id="nul"),
        pytest.param(raw_body(b'Content-Disposition: form-data; name="a\rb"\r\n\r\n'), id="cr"),
        pytest.param(raw_body(CD_A + b"X-Note: a\nb\r\n\r\n"), id="bare-lf-in-header"),
        pytest.param(raw_body(CD_A + b"X-Note: a\x7f\r\n\r\n"), id="del"),
        pytest.param(raw_body(CD_A + CD_A + b"\r\n"), id="two-dispositions"),
        pytest.param(
            raw_body(CD_A + b"Content-Type: a/b\r\ncontent-type: a/b\r\n\r\n"), id="two-types"
        ),
        pytest.param(raw_body(CD_A + b"Content-Type: image\r\n\r\n"), id="bad-type"),
        pytest.param(raw_body(CD_A + b"Content-Type: image/png; q\r\n\r\n"), id="bad-type-param"),
        pytest.param(
            raw_body(b'Content-Disposition: form-data; name="a"; name="b"\r\n\r\n'),
            id="name-twice",
        ),
        pytest.param(
            raw_body(b"Content-Disposition: form-data; name=\"a\"; NAME*=UTF-8''b\r\n\r\n"),
            id="name-star",
        ),
        pytest.param(
            raw_body(b'Content-Disposition: form-data; name="a\r\n\r\n'), id="unclosed-quote"
        ),
        pytest.param(raw_body(b'Content-Disposition: form-data; name = "a"\r\n\r\n'), id="ws-eq"),
        pytest.param(raw_body(b"Content-Disposition: form-data; name=a b\r\n\r\n"), id="a-b"),
        pytest.param(raw_body(b"Content-Disposition: form-data name=a\r\n\r\n"), id="no-semi"),
        pytest.param(
            raw_body(b"Content-Disposition: form-data; name=a; filename*=UTF-16''%FF\r\n\r\n"),
            id="ext-charset",
        ),
        pytest.param(
            raw_body(b"Content-Disposition: form-data; name=a; filename*=UTF-8''%C3\r\n\r\n"),
            id="ext-not-utf8",
        ),
        pytest.param(
            raw_body(b"Content-Disposition: form-data; name=a; filename*=UTF-8''%zz\r\n\r\n"),
            id="ext-bad-percent",
        ),
        pytest.param(
            raw_body(b"Content-Disposition: form-data; name=a; filename*=a.png\r\n\r\n"),
            id="ext-no-charset",
        ),
    ],
)
def test_malformed_bodies_are_refused(body: bytes) -> None:
    bad = refused(body)
    assert (bad.status, bad.reason) == (400, "multipart_malformed"), bad.message


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(b"", id="no-headers"),
        pytest.param(b"Content-Type: text/plain\r\n", id="no-disposition"),
        pytest.param(b'Content-Disposition: attachment; name="a"\r\n', id="attachment"),
        pytest.param(b'Content-Disposition: form-data; filename="a.png"\r\n', id="no-name"),
        pytest.param(b'Content-Disposition: form-data; name=""\r\n', id="empty-name"),
        pytest.param(b"Content-Disposition: form-data\r\n", id="bare-form-data"),
    ],
)
def test_a_part_without_a_name_is_refused(headers: bytes) -> None:
    bad = refused(raw_body(field("ok"), headers + b"\r\ndata"))
    assert (bad.status, bad.reason) == (400, "multipart_part_without_name")
    assert bad.details == {"part": 2}
    assert "part 2" in bad.message


def test_messages_name_the_part_and_never_echo_values() -> None:
    secret = b"sk-live-TOPSECRET"
    bad = refused(raw_body(field("a", secret), CD_A + b"X-Token: " + secret + b"\x01\r\n\r\n"))
    assert bad.details is not None and bad.details["part"] == 2
    assert "part 2" in bad.message and "TOPSECRET" not in bad.message
    assert "TOPSECRET" not in repr(bad.details)


# --- limits ----------------------------------------------------------------------------------


def test_too_many_parts_is_413_and_scanning_stops_at_the_limit() -> None:
    limits = MultipartLimits(max_parts=3)
    three = [field(name) for name in "abc"]
    assert len(parse_multipart(raw_body(*three), CT, limits)) == 3
    bad = refused(raw_body(*three, field("d")), limits=limits)
    assert (bad.status, bad.reason) == (413, "multipart_too_many_parts")
    # Nothing after the fourth delimiter is read: the rest may be anything.
    fourth = raw_body(*three)[: -len(b"--\r\n")] + b"\r\n"
    assert reason(fourth + b"\x00 no headers, no end", limits=limits) == "multipart_too_many_parts"


def test_a_part_larger_than_the_limit_is_413() -> None:
    limits = MultipartLimits(max_part_bytes=100)
    assert parse_multipart(raw_body(field("a", b"x" * 100)), CT, limits)[0].data == b"x" * 100
    bad = refused(raw_body(field("a", b"x" * 101)), limits=limits)
    assert (bad.status, bad.reason, bad.details) == (
        413,
        "multipart_part_too_large",
        {"part": 1, "max_part_bytes": 100},
    )
    # Found without scanning to the end of a large body, and even with no delimiter left.
    huge = DASH + b"\r\n" + field("a", b"x" * 1_000_000)
    assert reason(huge, limits=limits) == "multipart_part_too_large"
    assert reason(raw_body(field("a"), field("b", b"x" * 1000)), limits=limits) == (
        "multipart_part_too_large"
    )


def test_headers_larger_than_the_limit_are_400() -> None:
    header = b'Content-Disposition: form-data; name="a"\r\nX-Pad: '
    pad = 200 - len(header)
    limits = MultipartLimits(max_part_header_bytes=200)
    exactly = header + b"p" * pad + b"\r\n\r\ndata"
    assert parse_multipart(raw_body(exactly), CT, limits)[0].data == b"data"
    over = header + b"p" * (pad + 1) + b"\r\n\r\ndata"
    bad = refused(raw_body(over), limits=limits)
    assert (bad.status, bad.reason) == (400, "multipart_headers_too_large")
    endless = DASH + b"\r\n" + header + b"p" * 10_000_000
    assert reason(endless, limits=limits) == "multipart_headers_too_large"


def test_duplicate_fields_are_refused_unless_allowed() -> None:
    long_name = "n" * 100
    body = raw_body(field("a"), field(long_name), field(long_name, b"secret-value"))
    bad = refused(body)
    assert (bad.status, bad.reason) == (400, "multipart_duplicate_field")
    assert bad.details == {"part": 3, "field": "n" * 64 + "..."}
    assert "n" * 65 not in bad.message and "secret" not in bad.message
    allowed = parse_multipart(body, CT, MultipartLimits(allow_duplicate_fields=True))
    assert [p.data for p in allowed] == [b"x", b"x", b"secret-value"]


# --- robustness ------------------------------------------------------------------------------

KNOWN_REASONS = {
    "multipart_malformed": 400,
    "multipart_part_without_name": 400,
    "multipart_headers_too_large": 400,
    "multipart_duplicate_field": 400,
    "multipart_too_many_parts": 413,
    "multipart_part_too_large": 413,
}


def test_every_truncation_of_a_valid_body_is_refused() -> None:
    body, content_type = urllib3_body(
        [("model", "resnet"), ("image", ("cat.png", PNG[:40], "image/png")), ("n", "é")]
    )
    expected = parse_multipart(body, content_type, LIMITS)
    for cut in range(len(body)):
        try:
            parts = parse_multipart(body[:cut], content_type, LIMITS)
        except MalformedBody as bad:
            assert KNOWN_REASONS[bad.reason] == bad.status
        else:  # only the close delimiter's own line break may be missing
            assert cut == len(body) - 2 and parts == expected


MUTATIONS = [b"\r\n", b"\r", b"\n", b"--", b"-", DASH, b"\r\n" + DASH, b" ", b"\t", b'"', b";"]
MUTATIONS += [b"=", b":", b"\\", b"\x00", b"\xff", b"name", b"filename*=UTF-8''%C3%A9", CD_A]


def mutate(rng: random.Random, body: bytes) -> bytes:
    mutated = bytearray(body)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(mutated) + 1)
        roll = rng.random()
        if roll < 0.3:
            del mutated[at : at + rng.randint(1, 8)]
        elif roll < 0.7:
            mutated[at:at] = rng.choice(MUTATIONS)
        elif roll < 0.85 and mutated:
            mutated[min(at, len(mutated) - 1)] = rng.randrange(256)
        else:
            start = rng.randrange(len(mutated) + 1)
            mutated[at:at] = mutated[start : start + rng.randint(1, 64)]
    return bytes(mutated)


def test_mutated_bodies_only_ever_parse_or_raise_malformed_body() -> None:
    rng = random.Random(20240611)
    body, content_type = urllib3_body(
        [("model", "resnet"), ("image", ("cat.png", PNG[:60], "image/png")), ("n", "é")]
    )
    limits = MultipartLimits(max_parts=4, max_part_bytes=200, max_part_header_bytes=120)
    outcomes = {"parsed": 0, "refused": 0}
    for _ in range(5000):
        candidate = mutate(rng, body)
        try:
            parts = parse_multipart(candidate, content_type, limits)
        except MalformedBody as bad:
            assert KNOWN_REASONS[bad.reason] == bad.status
            outcomes["refused"] += 1
            continue
        outcomes["parsed"] += 1
        assert 1 <= len(parts) <= limits.max_parts
        for part in parts:
            assert part.name and len(part.data) <= limits.max_part_bytes
            assert part.data in candidate and b"\r\n" + DASH not in part.data
    assert min(outcomes.values()) > 500, outcomes  # the mutations exercise both outcomes


def test_pathological_bodies_take_linear_time() -> None:
    near_misses = (b"\r\n" + DASH[:-1] + b"Z") * 30_000
    huge_padding = b" " * 1_000_000
    cases = [
        raw_body(field("a", near_misses)),
        raw_body(b'Content-Disposition: form-data; name="' + b"\\x" * 2000 + b"\r\n\r\n"),
        raw_body(b"Content-Disposition: form-data; name=a" + b";" * 3000 + b"\r\n\r\n"),
        raw_body(b"Content-Disposition: form-data; name=a;" + b" " * 3000 + b"x\r\n\r\n"),
        DASH + huge_padding + b"\r\n" + field("a") + b"\r\n" + DASH + b"--" + huge_padding,
        b"\r\n" * 500_000 + raw_body(field("a")),
        (b"\r\n" + DASH + b"\r\n") * 200_000,
    ]
    for body in cases:
        started = time.perf_counter()
        with contextlib.suppress(MalformedBody):
            parse_multipart(body, CT, LIMITS)
        assert time.perf_counter() - started < 0.5


# --- application/x-www-form-urlencoded --------------------------------------------------------

FORM = FormLimits()


def form_refused(body: bytes, limits: FormLimits = FORM) -> MalformedBody:
    with pytest.raises(MalformedBody) as caught:
        parse_form(body, limits)
    return caught.value


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (b"", {}),
        (b"&&&", {}),
        (b"a=1&&b=2&", {"a": ["1"], "b": ["2"]}),
        (b"a=1&b=h%C3%A9+x&a=2", {"a": ["1", "2"], "b": ["hé x"]}),  # curl -d, requests data=
        (b"flag&a=", {"flag": [""], "a": [""]}),
        (b"=x", {"": ["x"]}),
        (b"a=b=c", {"a": ["b=c"]}),
        (b"q=%2B1+%2b2%25%26%3D", {"q": ["+1 +2%&="]}),
        (b"k%20ey=%e2%82%AC", {"k ey": ["€"]}),
        (b"a=raw+\xc3\xa9", {"a": ["raw é"]}),
        (b"a=;b", {"a": [";b"]}),
        (rb"path=C:\x41\\n%5Cx41", {"path": [r"C:\x41\\n\x41"]}),
        (b"a=%00%0A", {"a": ["\x00\n"]}),
    ],
)
def test_form_fields(body: bytes, fields: dict[str, list[str]]) -> None:
    assert parse_form(body, FORM) == fields


def test_form_matches_what_urllib_reads_from_a_browser_encoded_body() -> None:
    pairs = [("prompt", "a cat & a dog = 2 pets? 100%"), ("lang", "日本語"), ("empty", "")]
    pairs += [("prompt", "second\r\nline"), ("sym", "~!@#$^*()_+`-[]{}|;':\",./<>?\\")]
    body = urllib.parse.urlencode(pairs).encode()
    assert parse_form(body, FORM) == urllib.parse.parse_qs(
        body.decode(), keep_blank_values=True, strict_parsing=True
    )


@pytest.mark.parametrize(
    ("body", "position"),
    [
        (b"a=%", 2),
        (b"a=%4", 2),
        (b"a=%zz", 2),
        (b"a=%4g", 2),
        (b"a=100%", 5),
        (b"x=1&a=%41%", 9),
        (b"%=1", 0),
        (b"x=1&b%x=1", 5),
    ],
)
def test_form_bad_percent_encoding_is_malformed(body: bytes, position: int) -> None:
    bad = form_refused(body)
    assert (bad.status, bad.reason) == (400, "form_malformed")
    assert bad.details is not None and bad.details["position"] == position


@pytest.mark.parametrize("body", [b"a=%C3", b"a=%FF", b"a=\xff", b"a=%ED%A0%80", b"%C3=1"])
def test_form_values_and_names_must_decode_to_utf8(body: bytes) -> None:
    bad = form_refused(body)
    assert (bad.status, bad.reason) == (400, "form_malformed")


def test_form_messages_name_the_field_and_never_echo_values() -> None:
    bad = form_refused(b"model=x&token=sk-TOPSECRET%zz")
    assert "'token'" in bad.message and "TOPSECRET" not in bad.message
    assert bad.details == {"field": "token", "position": 26}
    long_name = "n" * 100
    bad = form_refused(f"{long_name}=%FF".encode())
    assert bad.details == {"field": "n" * 64 + "..."} and "n" * 65 not in bad.message
    bad = form_refused(b"a=1&%FFsecret=1")
    assert bad.details == {"field_index": 2} and "secret" not in bad.message


def test_form_field_count_limit() -> None:
    limits = FormLimits(max_fields=3)
    assert len(parse_form(b"a=1&&b=2&&&c=3&", limits)) == 3
    bad = form_refused(b"a=1&b=2&c=3&d", limits)
    assert (bad.status, bad.reason) == (413, "form_too_many_fields")
    # Stops at the limit: what follows is never decoded.
    assert form_refused(b"a&a&a&a&%zz", limits).reason == "form_too_many_fields"


def test_form_field_size_limit_counts_decoded_bytes() -> None:
    limits = FormLimits(max_field_bytes=10)
    assert parse_form(b"a=" + b"%41" * 10, limits) == {"a": ["A" * 10]}
    assert parse_form(b"a=" + b"x" * 10, limits) == {"a": ["x" * 10]}
    for body in [b"a=" + b"x" * 11, b"a=" + b"%41" * 11, b"a=" + b"+" * 11, b"n" * 11 + b"=1"]:
        bad = form_refused(body, limits)
        assert (bad.status, bad.reason) == (413, "form_field_too_large")
    # Too large is known before decoding, even if the value would be malformed.
    assert form_refused(b"a=" + b"%zz" * 100, limits).reason == "form_field_too_large"


def reference_form(body: bytes) -> dict[str, list[str]] | None:
    """The strict reading, slowly: urllib's decoder once each escape is known good."""
    fields: dict[str, list[str]] = {}
    for pair in body.split(b"&"):
        if not pair:
            continue
        decoded: list[str] = []
        for raw in pair.partition(b"=")[::2]:
            if re.search(rb"%(?![0-9A-Fa-f]{2})", raw):
                return None
            try:
                decoded.append(urllib.parse.unquote_to_bytes(raw.replace(b"+", b" ")).decode())
            except UnicodeDecodeError:
                return None
        fields.setdefault(decoded[0], []).append(decoded[1])
    return fields


def test_form_agrees_with_a_reference_decoder_on_random_bodies() -> None:
    rng = random.Random(1729)
    alphabet = [b"%", b"%4", b"%41", b"%c3%a9", b"%C3", b"%zz", b"+", b"&", b"=", b"\\"]
    alphabet += [b"\\x", b"\\x41", b"a", b"\xc3\xa9", b"\xff", b"\x00", b";", b"&&"]
    limits = FormLimits(max_fields=10_000, max_field_bytes=10_000)
    for _ in range(5000):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        expected = reference_form(body)
        try:
            assert parse_form(body, limits) == expected, body
        except MalformedBody as bad:
            assert expected is None and (bad.status, bad.reason) == (400, "form_malformed"), body


def test_pathological_forms_take_linear_time() -> None:
    cases = [b"&" * 1_000_000, b"a=" + b"%41" * 20_000, b"=" * 1_000_000, b"%" * 1_000_000]
    for body in cases:
        started = time.perf_counter()
        with contextlib.suppress(MalformedBody):
            parse_form(body, FORM)
        assert time.perf_counter() - started < 0.5
