"""Which pattern rules could possibly match a text, found in one Hyperscan pass.

Most texts (two thirds of the development set's views) can match no rule at all, yet finding
that out rule by rule cost the pattern library most of its time. Hyperscan (Intel's
multi-pattern regex engine) answers for all rules at once, in C: ~14 µs per KB of views, about
a third of it the call itself.

Hyperscan does not support Python's look-arounds and has its own Unicode classes, so each
rule is translated into a looser byte-level expression that matches wherever the rule can
(a superset; the rule's own ``re`` pattern then decides, exactly as without the prefilter):

- the rule's regex is parsed with Python's own parser (``re._parser``); every character
  class becomes an expression for one whole UTF-8 character: the ASCII characters it matches
  (asked of Python's engine), and its non-ASCII ones exactly when it lists them (``[äöü]``,
  the zero-width characters), else any non-ASCII character (``\\w``); a repetition of such a
  class (``[\\W_]{0,6}``) becomes an unbounded run of bytes: half the database (390 KB) and
  a third of the compile time of exact bounded runs, for 0.5 % more candidates;
- look-arounds, ``\\b`` and anchors are dropped (fewer conditions, more matches);
- the rule is cut at each repetition of a group (``(?:\\w+\\W+){0,5}``): each piece must
  occur somewhere in the text (a logical AND of the pieces, Hyperscan's combination
  expressions), which keeps compile time under a second where the whole expressions took
  half a minute.

A scan needs Hyperscan scratch space of its own: each thread gets one.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Sequence
from typing import Any, cast

import hyperscan

__all__ = ["RulePrefilter", "loose_pieces"]

# Python's regex parser (the same one ``re.compile`` uses); private, and untyped in typeshed.
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")
_compiler: Any = importlib.import_module("re._compiler")

# One character of UTF-8 (lone surrogates, encoded with "surrogatepass", included): an ASCII
# byte, or a lead byte and its continuation bytes. A continuation byte never starts one, so
# these groups consume whole characters.
_ANY_NON_ASCII = rb"[\xc2-\xf4][\x80-\xbf]{1,3}"
_ANY_CHARACTER = rb"(?:[\x00-\x7f]|" + _ANY_NON_ASCII + rb")"
# A class with at most this many non-ASCII code points, all listed (no \w or negation), is
# matched exactly; a larger one as "any non-ASCII character".
_MAX_LISTED = 8192
_ANY_BYTE = rb"[\x00-\xff]"
_NON_ASCII_BYTES = rb"\x80-\xff"


def loose_pieces(pattern: str, flags: int = 0) -> list[bytes]:
    """Hyperscan expressions (bytes) that all match somewhere in any UTF-8 text in which
    ``pattern`` matches; pieces that could match the empty string are left out."""
    parsed = _parser.parse(pattern, flags)
    if parsed.state.flags & re.IGNORECASE:  # literals would be matched as written
        raise ValueError(f"the injection prefilter cannot translate (?i) in {pattern[:40]!r}")
    pieces: list[list[tuple[Any, Any]]] = [[]]
    for op, av in parsed:
        if _is_group_repeat(op, av):
            pieces.append([])  # the repetition itself may match anything: a cut
        else:
            pieces[-1].append((op, av))
    out = []
    for items in pieces:
        sub = _parser.SubPattern(parsed.state, items)
        if sub.getwidth()[0] > 0:
            out.append(_translate(sub, flags))
    return out


def _is_group_repeat(op: Any, av: Any) -> bool:
    if op not in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT):
        return False
    _low, high, item = av
    single = len(item) == 1 and _character(item[0][0], item[0][1], 0) is not None
    return not single and (high == _constants.MAXREPEAT or high > 1)


def _character(op: Any, av: Any, flags: int) -> tuple[bytes, bytes | None] | None:
    """(an expression matching one whole character wherever ``op`` matches one, a byte class
    matching each of the bytes of such characters or None if they are all ASCII), or None
    when ``op`` is not a single-character item."""
    if op is _constants.LITERAL:
        raw = chr(av).encode("utf-8", "surrogatepass")
        return _hex(raw), (b"[" + _hex(raw) + b"]" if len(raw) > 1 else None)
    if op is _constants.ANY:
        return _ANY_CHARACTER, _ANY_BYTE
    if op is _constants.NOT_LITERAL:
        return _byte_class([(_constants.NEGATE, None), (_constants.LITERAL, av)], flags)
    if op is _constants.IN:
        return _byte_class(av, flags)
    return None


def _hex(raw: bytes) -> bytes:
    return b"".join(b"\\x%02x" % byte for byte in raw)


def _byte_class(items: list[tuple[Any, Any]], flags: int) -> tuple[bytes, bytes | None]:
    sub = _parser.SubPattern(_parser.State(), [(_constants.IN, items)])
    # re.UNICODE, as the parser sets for every str pattern: \s also matches \x1c-\x1f then
    matches = cast(re.Pattern[str], _compiler.compile(sub, flags | re.UNICODE)).fullmatch
    ascii_bytes = b"".join(b"\\x%02x" % code for code in range(128) if matches(chr(code)))
    listed = _listed_non_ascii(items)
    if listed is None:
        non_ascii = _ANY_NON_ASCII
    elif not listed:
        return b"[" + ascii_bytes + b"]", None
    else:
        non_ascii = _utf8_alternatives(listed)
    loose = b"[" + ascii_bytes + _NON_ASCII_BYTES + b"]"
    if not ascii_bytes:
        return b"(?:" + non_ascii + b")", loose
    return b"(?:[" + ascii_bytes + b"]|" + non_ascii + b")", loose


def _listed_non_ascii(items: list[tuple[Any, Any]]) -> list[int] | None:
    """The non-ASCII code points of a class of literals and ranges; None for any other class
    (negated, categories such as ``\\w``) or one listing more than ``_MAX_LISTED``."""
    codes: list[int] = []
    for op, av in items:
        if op is _constants.LITERAL:
            low, high = av, av
        elif op is _constants.RANGE:
            low, high = av
        else:
            return None
        codes.extend(range(max(low, 128), high + 1))
        if len(codes) > _MAX_LISTED:
            return None
    return codes


def _utf8_alternatives(codes: list[int]) -> bytes:
    """An alternation matching exactly the UTF-8 encodings of ``codes`` (non-ASCII), grouped
    by all but their last byte: ``\\xe2\\x80[\\x8b-\\x8f]``."""
    last_bytes: dict[bytes, set[int]] = {}
    for code in codes:
        raw = chr(code).encode("utf-8", "surrogatepass")
        last_bytes.setdefault(raw[:-1], set()).add(raw[-1])
    return b"|".join(
        _hex(prefix) + _byte_ranges(ends) for prefix, ends in sorted(last_bytes.items())
    )


def _byte_ranges(values: set[int]) -> bytes:
    """A byte class of ``values`` written as ranges: ``[\\x80-\\xbf]``."""
    out: list[bytes] = []
    ordered = sorted(values)
    start = prev = ordered[0]
    for value in [*ordered[1:], -1]:
        if value == prev + 1:
            prev = value
            continue
        out.append(b"\\x%02x" % start + (b"-\\x%02x" % prev if prev > start else b""))
        start = prev = value
    return b"[" + b"".join(out) + b"]"


def _translate(sub: Any, flags: int) -> bytes:
    out: list[bytes] = []
    for op, av in sub:
        single = _character(op, av, flags)
        if single is not None:
            out.append(single[0])
        elif op in (_constants.AT, _constants.ASSERT, _constants.ASSERT_NOT):
            continue  # a condition dropped: only more matches
        elif op is _constants.BRANCH:
            out.append(b"(?:" + b"|".join(_translate(alt, flags) for alt in av[1]) + b")")
        elif op is _constants.SUBPATTERN:
            if av[1] & re.IGNORECASE:  # (?i:...)
                raise ValueError("the injection prefilter cannot translate (?i:...) in a rule")
            out.append(b"(?:" + _translate(av[-1], flags) + b")")
        elif op in (_constants.MAX_REPEAT, _constants.MIN_REPEAT, _constants.POSSESSIVE_REPEAT):
            low, high, item = av
            out.append(_repeat(low, high, item, flags))
        else:
            raise ValueError(f"the injection prefilter cannot translate {op} in a rule")
    return b"".join(out)


def _repeat(low: int, high: int, item: Any, flags: int) -> bytes:
    unbounded = high == _constants.MAXREPEAT
    single = _character(item[0][0], item[0][1], flags) if len(item) == 1 else None
    if single is not None and single[1] is not None:
        # bounded runs of whole multi-byte characters make databases large: any run of bytes
        return single[1] + b"{%d,}" % low
    # a character, or a group repeated at most once (deeper repetitions were cut)
    top = b"" if unbounded else b"%d" % high
    return b"(?:" + _translate(item, flags) + b"){%d," % low + top + b"}"


class RulePrefilter:
    """``candidates(text)``: the indexes of the patterns that may match ``text``."""

    def __init__(self, patterns: Sequence[str], flags: int = 0) -> None:
        expressions: list[bytes] = []
        ids: list[int] = []
        kinds: list[int] = []
        always: set[int] = set()
        next_piece = len(patterns)
        for index, pattern in enumerate(patterns):
            pieces = loose_pieces(pattern, flags)
            if not pieces:
                always.add(index)  # nothing to require: always a candidate
            elif len(pieces) == 1:
                expressions.append(pieces[0])
                ids.append(index)
                kinds.append(hyperscan.HS_FLAG_SINGLEMATCH)
            else:
                piece_ids = range(next_piece, next_piece + len(pieces))
                next_piece += len(pieces)
                expressions.extend(pieces)
                ids.extend(piece_ids)
                kinds.extend(
                    [hyperscan.HS_FLAG_QUIET | hyperscan.HS_FLAG_SINGLEMATCH] * len(pieces)
                )
                expressions.append(" & ".join(map(str, piece_ids)).encode())
                ids.append(index)
                kinds.append(hyperscan.HS_FLAG_COMBINATION | hyperscan.HS_FLAG_SINGLEMATCH)
        self._always = frozenset(always)
        self._every = frozenset(range(len(patterns)))
        self._database: Any = None
        if expressions:
            self._database = hyperscan.Database()
            self._database.compile(
                expressions=expressions, ids=ids, elements=len(expressions), flags=kinds
            )
        self._scratch = threading.local()

    def candidates(self, text: str) -> set[int]:
        found = set(self._always)
        if self._database is None:
            return found
        try:
            # (data, match_event_handler, flags, context, scratch), by position: the binding
            # parses keywords by looking each name up as a new string: a third of a short scan
            self._database.scan(
                text.encode("utf-8", "surrogatepass"), _collect, 0, found, self._thread_scratch()
            )
        except hyperscan.ScanTerminated:
            # The binding stops a database of a single combination this way (never the shipped
            # rule set): no filtering, rather than a guess.
            return set(self._every)
        return found

    def _thread_scratch(self) -> Any:
        scratch = getattr(self._scratch, "space", None)
        if scratch is None:
            scratch = self._scratch.space = hyperscan.Scratch(self._database)
        return scratch


def _collect(index: int, _start: int, _end: int, _flags: int, found: object) -> None:
    cast(set[int], found).add(index)
