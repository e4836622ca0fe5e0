"""Strict ``multipart/form-data`` (RFC 7578 over RFC 2046 section 5.1) for a buffered body.

Strict where parsers disagree, so that what we check is what the upstream reads: CRLF line
breaks only; the ``--boundary`` string may occur only as a delimiter at the start of a line
(werkzeug, in front of the classifier, also splits on bare LF/CR and skips a boundary in
mid-line, so either would let a part hide inside another); part headers are UTF-8 with no
control characters and no folding; a parameter given twice, ``name*`` and unknown
dispositions are refused. Lenient only where RFC 2046 allows it and real clients use it: a
preamble and an epilogue (ignored), transport padding after a delimiter, quoted or token
parameters, ``filename*=UTF-8''...`` (RFC 8187; preferred to ``filename`` as RFC 6266 says).

Work is linear in the body: one ``bytes.find`` for each delimiter, each scan bounded by the
limits, and no regular expression that can backtrack more than linearly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from authz_service.layers.syntax.body_errors import MalformedBody

__all__ = ["MultipartLimits", "Part", "boundary_of", "parse_multipart"]


@dataclass(frozen=True, slots=True)
class MultipartLimits:
    max_parts: int = 16
    max_part_bytes: int = 8 * 1024 * 1024
    """Largest content of one part (headers not counted)."""
    max_part_header_bytes: int = 4096
    """Largest header block of one part, its CRLFs included, the blank line not."""
    allow_duplicate_fields: bool = False
    """Whether two parts may share a name (``<input type=file multiple>`` needs it)."""


@dataclass(frozen=True, slots=True)
class Part:
    name: str
    filename: str | None
    """``None`` when the part has no filename parameter; ``""`` when it is empty (a browser's
    file input with no file chosen)."""
    content_type: str | None
    """The part's media type, lowercased, without parameters; ``None`` if absent."""
    data: bytes


_CRLF = b"\r\n"
_BLANK_LINE = b"\r\n\r\n"
_NAME_SHOWN = 64

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TCHARS_RE = re.compile(_TCHARS)
_MEDIA_TYPE = re.compile(rf"[ \t]*({_TCHARS}/{_TCHARS})[ \t]*")
_DISPOSITION = re.compile(rf"[ \t]*({_TCHARS})[ \t]*")
# Alternatives that start differently and a quoted-string whose two branches never match the
# same character: every match is linear, whatever the input.
_PARAMETER = re.compile(rf'[ \t]*;[ \t]*({_TCHARS})=(?:({_TCHARS})|"((?:[^"\\]|\\.)*)")[ \t]*')
_TRAILING_SEMICOLON = re.compile(r"[ \t]*;[ \t]*\Z")
_QUOTED_PAIR = re.compile(r"\\(.)")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_PADDING = re.compile(rb"[ \t]*")
# RFC 2046 5.1.1: 1 to 70 bchars, the last not a space.
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
# RFC 8187 ext-value: charset'[language]'value-chars.
_EXT_VALUE = re.compile(r"([^']*)'([0-9A-Za-z-]*)'((?:%[0-9A-Fa-f]{2}|[0-9A-Za-z!#$&+.^_`|~-])*)")
_EXT_CHARSETS = {"utf-8": "utf-8", "iso-8859-1": "iso-8859-1"}


class _BadHeader(ValueError):
    """A header value that does not parse; the caller chooses the reason."""


def boundary_of(content_type_header: str) -> str:
    """The boundary of a ``multipart/form-data`` Content-Type header value.

    Raises :class:`MalformedBody`: 415 ``multipart_not_form_data`` for another media type,
    400 ``multipart_boundary_missing`` when the boundary is absent, given twice or not
    1-70 characters of RFC 2046's set, or the parameters do not parse.
    """
    match = _MEDIA_TYPE.match(content_type_header)
    media_type = match[1].lower() if match is not None else None
    if media_type != "multipart/form-data":
        raise MalformedBody(
            415, "multipart_not_form_data", "Content-Type is not multipart/form-data"
        )
    try:
        _, parameters = _parse_header_value(content_type_header, _MEDIA_TYPE)
    except _BadHeader as bad:
        raise _no_boundary(f"Content-Type {bad}") from None
    boundary = parameters.get("boundary")
    if boundary is None:
        raise _no_boundary("Content-Type multipart/form-data has no boundary parameter")
    if _BOUNDARY.fullmatch(boundary) is None:
        raise _no_boundary(
            "multipart boundary must be 1-70 letters, digits or '()+_,-./:=? "
            "and not end with a space",
            length=len(boundary),
        )
    return boundary


def parse_multipart(
    body: bytes, content_type_header: str, limits: MultipartLimits
) -> tuple[Part, ...]:
    """Every part of ``body``, in order, or :class:`MalformedBody` naming the first fault."""
    dash = b"--" + boundary_of(content_type_header).encode("ascii")
    size = len(body)

    opening = body.find(dash)
    if opening == -1:
        raise _malformed("multipart body has no opening boundary delimiter")
    if opening > 0 and not body.startswith(_CRLF, opening - 2):
        raise _malformed(
            "multipart boundary string occurs in the preamble, not at the start of a line",
            position=opening,
        )
    position, closed = _after_delimiter(body, opening + len(dash), 0)
    if closed:
        raise _malformed("multipart body has no parts")

    parts: list[Part] = []
    names: set[str] = set()
    header_window = limits.max_part_header_bytes + len(_BLANK_LINE)
    # The furthest a part's next delimiter can end when both of its limits hold.
    part_window = header_window + limits.max_part_bytes + len(_CRLF) + len(dash)
    while not closed:
        number = len(parts) + 1
        if number > limits.max_parts:
            raise MalformedBody(
                413,
                "multipart_too_many_parts",
                f"multipart body has more than {limits.max_parts} parts",
                {"max_parts": limits.max_parts},
            )
        scan_end = position + part_window
        delimiter = body.find(dash, position, scan_end)
        if delimiter == -1:
            if size < scan_end:
                raise _malformed(
                    f"multipart body ends inside part {number}, before a closing delimiter",
                    part=number,
                )
            headers_end, _ = _header_end(body, position, position + header_window)
            if headers_end == -1:
                raise _headers_too_large(number, limits)
            raise _part_too_large(number, limits)
        if delimiter == position:
            raise _malformed(
                f"multipart part {number} is empty: no headers and no blank line", part=number
            )
        end = delimiter - len(_CRLF)
        if end < position or not body.startswith(_CRLF, end):
            raise _malformed(
                f"multipart boundary string occurs inside part {number}, "
                "not at the start of a line",
                part=number,
                position=delimiter,
            )
        headers_end, data_start = _header_end(body, position, min(end, position + header_window))
        if headers_end == -1:
            if end - position >= header_window:
                raise _headers_too_large(number, limits)
            raise _malformed(
                f"multipart part {number} has no blank line after its headers", part=number
            )
        if end - data_start > limits.max_part_bytes:
            raise _part_too_large(number, limits)
        part = _make_part(body[position:headers_end], number, body[data_start:end])
        if part.name in names and not limits.allow_duplicate_fields:
            shown = _shown(part.name)
            raise MalformedBody(
                400,
                "multipart_duplicate_field",
                f"multipart field {shown!r} occurs more than once (part {number})",
                {"part": number, "field": shown},
            )
        names.add(part.name)
        parts.append(part)
        position, closed = _after_delimiter(body, delimiter + len(dash), number)
    return tuple(parts)


def _after_delimiter(body: bytes, position: int, number: int) -> tuple[int, bool]:
    """Past a ``--boundary`` at ``position``: where the next part starts, and whether that
    was the close delimiter (whose epilogue is ignored)."""
    closing = body.startswith(b"--", position)
    if closing:
        position += 2
    padding = _PADDING.match(body, position)
    position = padding.end() if padding is not None else position
    if body.startswith(_CRLF, position):
        return position + len(_CRLF), closing
    if closing and position == len(body):
        return position, True
    where = "closing " if closing else ""
    after = f"after part {number}" if number else "at the start"
    details: dict[str, Any] = {"part": number} if number else {}
    raise _malformed(
        f"multipart {where}boundary delimiter {after} is not followed by a line break",
        position=position,
        **details,
    )


def _header_end(body: bytes, start: int, stop: int) -> tuple[int, int]:
    """Where the part's header block ends and its data starts, or ``(-1, -1)`` when there is
    no blank line between ``start`` and ``stop``."""
    if body.startswith(_CRLF, start, stop):
        # No headers: the line break that ends the delimiter line is followed by a blank line.
        return start, start + len(_CRLF)
    blank = body.find(_BLANK_LINE, start, stop)
    return (-1, -1) if blank == -1 else (blank, blank + len(_BLANK_LINE))


def _make_part(block: bytes, number: int, data: bytes) -> Part:
    """The part whose header block (CRLF-separated lines, no blank line) is ``block``."""
    disposition, content_type = _part_headers(block, number)
    if disposition is None:
        raise _without_name(number, "has no Content-Disposition header")
    try:
        kind, parameters = _parse_header_value(disposition, _DISPOSITION)
    except _BadHeader as bad:
        raise _malformed(
            f"multipart part {number} Content-Disposition {bad}", part=number
        ) from None
    if kind != "form-data":
        raise _without_name(number, "is not Content-Disposition: form-data")
    if "name*" in parameters:
        raise _malformed(
            f"multipart part {number} Content-Disposition uses name*, which RFC 7578 forbids",
            part=number,
        )
    name = parameters.get("name")
    if not name:
        raise _without_name(number, "has no name in its Content-Disposition")
    filename = parameters.get("filename")
    extended = parameters.get("filename*")
    if extended is not None:
        filename = _decode_ext_value(extended, number)
    media_type = None
    if content_type is not None:
        try:
            media_type, _ = _parse_header_value(content_type, _MEDIA_TYPE)
        except _BadHeader as bad:
            raise _malformed(f"multipart part {number} Content-Type {bad}", part=number) from None
    return Part(name, filename, media_type, data)


def _part_headers(block: bytes, number: int) -> tuple[str | None, str | None]:
    """The Content-Disposition and Content-Type values of a header block (CRLF-separated
    lines, no blank line); other headers are checked for syntax and ignored."""
    if not block:
        return None, None
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise _malformed(
            f"multipart part {number} headers are not valid UTF-8 at byte {bad.start}",
            part=number,
        ) from None
    disposition: str | None = None
    content_type: str | None = None
    for line in text.split("\r\n"):
        field, colon, value = line.partition(":")
        if not colon:
            raise _malformed(
                f"multipart part {number} has a header line without a colon", part=number
            )
        if _TCHARS_RE.fullmatch(field) is None:
            raise _malformed(
                f"multipart part {number} has a malformed header name (folded or with "
                "spaces or control characters)",
                part=number,
            )
        if _CONTROL.search(value) is not None:
            raise _malformed(
                f"multipart part {number} header {field[:_NAME_SHOWN]} has a control character",
                part=number,
            )
        header = field.lower()
        if header == "content-disposition":
            if disposition is not None:
                raise _malformed(
                    f"multipart part {number} has two Content-Disposition headers", part=number
                )
            disposition = value
        elif header == "content-type":
            if content_type is not None:
                raise _malformed(
                    f"multipart part {number} has two Content-Type headers", part=number
                )
            content_type = value
    return disposition, content_type


def _parse_header_value(value: str, main: re.Pattern[str]) -> tuple[str, dict[str, str]]:
    """``main`` (lowercased) and the parameters (names lowercased) of a header value."""
    if _CONTROL.search(value) is not None:
        raise _BadHeader("has a control character")
    head = main.match(value)
    if head is None:
        raise _BadHeader("is malformed")
    parameters: dict[str, str] = {}
    position, end = head.end(), len(value)
    while position < end:
        parameter = _PARAMETER.match(value, position)
        if parameter is None:
            if _TRAILING_SEMICOLON.match(value, position) is not None:
                break
            raise _BadHeader("has a malformed parameter")
        key = parameter[1].lower()
        if key in parameters:
            raise _BadHeader(f"has the {key[:_NAME_SHOWN]} parameter twice")
        token, quoted = parameter[2], parameter[3]
        parameters[key] = token if token is not None else _unquote(quoted)
        position = parameter.end()
    return head[1].lower(), parameters


def _unquote(quoted: str) -> str:
    r"""The content of a quoted-string. Only ``\"`` and ``\\`` are escapes: browsers and
    urllib3 percent-encode quotes and send backslashes bare (``C:\x``), as werkzeug reads."""
    if "\\" not in quoted:
        return quoted
    return _QUOTED_PAIR.sub(
        lambda pair: pair[1] if pair[1] in '"\\' else pair[0],
        quoted,
    )


def _decode_ext_value(value: str, number: int) -> str:
    match = _EXT_VALUE.fullmatch(value)
    charset = _EXT_CHARSETS.get(match[1].lower()) if match is not None else None
    if match is None or charset is None:
        raise _malformed(
            f"multipart part {number} filename* is not charset'language'percent-encoded "
            "in UTF-8 or ISO-8859-1",
            part=number,
        )
    try:
        return unquote_to_bytes(match[3]).decode(charset)
    except UnicodeDecodeError:
        raise _malformed(
            f"multipart part {number} filename* is not valid {charset}", part=number
        ) from None


def _shown(name: str) -> str:
    return name if len(name) <= _NAME_SHOWN else name[:_NAME_SHOWN] + "..."


def _malformed(message: str, **details: Any) -> MalformedBody:
    return MalformedBody(400, "multipart_malformed", message, details or None)


def _no_boundary(message: str, **details: Any) -> MalformedBody:
    return MalformedBody(400, "multipart_boundary_missing", message, details or None)


def _without_name(number: int, what: str) -> MalformedBody:
    return MalformedBody(
        400,
        "multipart_part_without_name",
        f"multipart part {number} {what}; each part needs "
        'Content-Disposition: form-data; name="..."',
        {"part": number},
    )


def _headers_too_large(number: int, limits: MultipartLimits) -> MalformedBody:
    return MalformedBody(
        400,
        "multipart_headers_too_large",
        f"multipart part {number} headers exceed {limits.max_part_header_bytes} bytes",
        {"part": number, "max_part_header_bytes": limits.max_part_header_bytes},
    )


def _part_too_large(number: int, limits: MultipartLimits) -> MalformedBody:
    return MalformedBody(
        413,
        "multipart_part_too_large",
        f"multipart part {number} is larger than {limits.max_part_bytes} bytes",
        {"part": number, "max_part_bytes": limits.max_part_bytes},
    )
