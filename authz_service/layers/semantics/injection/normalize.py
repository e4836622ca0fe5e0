# ruff: noqa: RUF001, RUF003
"""Normalization against evasion, and the "views" of a text that the detectors read.

Every view knows how to map a span of its own text back to the ORIGINAL segment text. The fast
path (used for every request) builds the view strings with C-level primitives (``str.translate``,
``re.sub``, ``unicodedata.normalize``); the character-index map back to the original is only
built when a detector fires on that view (the slow path, per character).

Views:

* ``text`` — the original, lower-cased (always scanned; fake delimiters and markup are visible).
* ``normalized`` — HTML entities decoded, zero-width / bidi / tag characters removed, NFKC,
  lower-cased, homoglyphs (Cyrillic / Greek / other look-alikes) folded to Latin, HTML/XML tags,
  comment markers and markdown emphasis removed. Only scanned when it differs from ``text``.
* ``spaced`` — runs of single letters separated by spaces/punctuation joined ("i g n o r e").
* ``leet`` — digits and symbols inside words read as letters ("1gn0r3" → "ignore").
* ``rot13`` — only when the text contains rot13-looking trigger words.
* ``base64`` / ``hex`` / ``url`` / ``unicode_tags`` — plausible encoded segments of the original,
  decoded (printable UTF-8 only), normalized and scanned again, up to ``MAX_DEPTH`` levels,
  at most ``MAX_DECODED`` segments per text of at most ``MAX_ENCODED_CHARS`` characters each.
  A hit in a decoded view maps to the span of the encoded segment in the original.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import string
import unicodedata
from collections.abc import Callable, Collection, Iterable, Iterator
from itertools import filterfalse
from urllib.parse import unquote_plus

from authz_service.layers.semantics.injection._regex import tokenize, translate_ascii

__all__ = [
    "HINTS",
    "MAX_DECODED",
    "MAX_DEPTH",
    "MAX_ENCODED_CHARS",
    "Hints",
    "View",
    "decode_segments",
    "fold_confusables",
    "leet",
    "normalize",
    "normalize_mapped",
    "rot13",
    "spaced",
    "strip_invisible",
    "strip_markup",
    "views",
]

MAX_DEPTH = 2
MAX_DECODED = 8
MAX_ENCODED_CHARS = 16_384

# Zero-width, bidi controls, soft hyphen, variation selectors, word joiners, BOM, Unicode tags.
_INVISIBLE_CHAR = (
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0000-\U000e0fff]"
)
_INVISIBLE = re.compile(_INVISIBLE_CHAR + "+")
# Zero-width characters used as word separators ("ignore\u200ball\u200bprevious"): the
# ``zw_spaced`` view reads each of them as a space (one for one, so spans do not move).
_ZW_SEP = re.compile("[\u180e\u200b-\u200d\u2060\ufeff](?=\\w)(?<=\\w.)")
_ZW_ONE = re.compile("[\u180e\u200b-\u200d\u2060\ufeff]")
_TAG_RUN = re.compile("[\U000e0020-\U000e007e]{4,}")
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[a-zA-Z]{2,8});?")

# Homoglyphs: single code point -> single Latin letter (1:1, so spans do not move).
_CONFUSABLE_PAIRS = (
    # Cyrillic
    "аa бb вb гr дd еe ёe зz иu йu кk лl мm нh оo пn рp сc тt уy хx ьb ѕs іi їi јj ԁd ӏl ԛq ԝw "
    "ҽe һh ɡg ү y ѵv ԍg ҡk ӄk ʀr ꙅs ꞵb"
    # Greek
    " αa βb γy δd εe ζz ηn ιi κk λl μu νv οo πn ρp σo ςc τt υu φf χx ψw ωw ϲc ϳj ϵe"
    # Latin look-alikes and IPA
    " ıi ȷj ɑa ɩi ɪi ʟl ɴn ʏy ᴀa ᴄc ᴅd ᴇe ᴊj ᴋk ᴍm ᴏo ᴘp ᴛt ᴜu ᴠv ᴡw ᴢz ſs"
    " ƅb ɓb ɗd ɠg ɦh ɱm ɲn ƥp ʂs"
    # Armenian / Cherokee / misc
    " օo ոn սu ցg հh ⅰi ⅼl ⅽc ⅾd ⅿm"
    # capitals (folded before lower-casing: Greek capital Ν looks like N, its lower case like v)
    " Аa Вb Еe Кk Мm Нh Оo Рp Сc Тt Хx Іi Јj Ѕs Ԁd Ԛq Ԝw Үy"
    " Αa Βb Εe Ζz Ηh Ιi Κk Μm Νn Οo Ρp Τt Υy Χx Ϲc"
)
_CONFUSABLES: dict[int, str] = {}
for _pair in _CONFUSABLE_PAIRS.replace("ү y", "үy").split():
    if len(_pair) == 2:
        _CONFUSABLES[ord(_pair[0])] = _pair[1]
_CONFUSABLE_CHARS = re.compile("[" + re.escape("".join(map(chr, _CONFUSABLES))) + "]")

_INLINE_TAGS = frozenset(
    [
        "a",
        "abbr",
        "b",
        "bdi",
        "bdo",
        "big",
        "code",
        "del",
        "dfn",
        "em",
        "font",
        "i",
        "ins",
        "kbd",
        "mark",
        "q",
        "s",
        "samp",
        "small",
        "span",
        "strike",
        "strong",
        "sub",
        "sup",
        "tt",
        "u",
        "var",
        "wbr",
    ]
)
# Same matches as ``<!--|-->|<!\s*--|</?(tag)(?:\s[^<>]{0,256})?/?>|\*{1,3}|_{1,3}|~~|`+``,
# written to start with a character set (the scan stays in C; ~5x faster than the alternation).
_MARKUP = re.compile(
    r"[<*_~`-](?:(?<=<)(?:!--|!\s*--|/?([a-z][a-z0-9:_-]{0,30})(?:\s[^<>]{0,256})?/?>)"
    r"|(?<=-)->|(?<=\*)\*{0,2}|(?<=_)_{0,2}|(?<=~)~|(?<=`)`*)"
)
_MARKUP_CHARS = "<*_~`"

_SPACED = re.compile(r"(?<![^\W\d_])(?:[^\W\d_][^\w\n]{1,3}){3,}[^\W\d_](?![^\W\d_])")
_NON_LETTER = re.compile(r"[\W\d_]+")
# Four consecutive one-character tokens, searched in the tokens joined by single spaces (tokens
# never contain whitespace): one C-level join and scan, ~1.6x cheaper than a map over the tokens.
_FOUR_SINGLES = re.compile(r" \S \S \S \S(?!\S)")

# Cheap pre-check (the regex starts with a character set, so the scan stays in C): a leet
# digit/symbol next to a letter.
_LEET_PRE = re.compile(r"[0134578@$|!](?:(?<=[a-z].)|[a-z])")
# (regexes below start with a character set, not a look-behind, so the scan stays in C)
_LEET_HINT = re.compile(
    r"[0134578@$|!](?:(?<=[a-z].)[0134578@$|!]*[a-z]|(?<=\b.)[a-z]{2}|(?<=[a-z]{2}.)\b)"
)
_LEET = bytes.maketrans(b"0134578@$|!", b"oieastbasli")
_ROT13_WORDS = frozenset(
    [
        "ebg13",
        "vtaber",
        "vtabengr",
        "cerivbhf",
        "cevbe",
        "vafgehpgvbaf",
        "vafgehpgvba",
        "flfgrz",
        "cebzcg",
        "cnffjbeq",
        "qvfertneq",
        "sbetrg",
        "erirny",
        "frperg",
        "ehyrf",
    ]
)
_ROT13 = bytes.maketrans(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    b"nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZabcdefghijklm",
)


# Base64 runs (``[A-Za-z0-9+/_-]{16,}={0,2}``) and hex runs (``[0-9a-fA-F]{16}``) are found in
# a byte mask of the text (the class's bytes -> "a", every other byte -> " ") with
# ``bytes.find``: ~5x faster than a character-class regex, which tries every word's every
# character.
_B64_CHARS = string.ascii_letters + string.digits + "+/_-"
_B64_MASK = bytes(0x61 if chr(b) in _B64_CHARS else 0x20 for b in range(256))
_HEX_MASK = bytes(0x61 if chr(b) in string.hexdigits else 0x20 for b in range(256))
_MIN_RUN = 16
_RUN = b"a" * _MIN_RUN
# Same matches as ``(?:\\x[0-9a-fA-F]{2}){6,}|(?<![0-9a-fA-F])(?:[0-9a-fA-F]{2}[ :]?){8,}``,
# written to start with a character set (the scan stays in C; ~3x faster).
_HEX = re.compile(
    r"[\\0-9a-fA-F](?:(?<=\\)x[0-9a-fA-F]{2}(?:\\x[0-9a-fA-F]{2}){5,}"
    r"|(?<=[0-9a-fA-F])(?<![0-9a-fA-F].)[0-9a-fA-F][ :]?(?:[0-9a-fA-F]{2}[ :]?){7,})"
)
_URL = re.compile(
    r"(?:[A-Za-z0-9._~+!*'(),;:@&=/?-]*%[0-9A-Fa-f]{2}){3,}[A-Za-z0-9._~+!*'(),;:@&=/?-]*"
)
_ENC_HINT = re.compile(r"[A-Za-z0-9+/_-]{16}|%[0-9A-Fa-f]{2}|\\x[0-9a-fA-F]{2}|[0-9a-fA-F]{16}")
_BAD_CHARS = re.compile(r"[^\t\n\r\x20-\x7e\u00a0-\ud7ff\ue000-\ufffc]")
_LETTERS = re.compile(r"[^\W\d_]{2,}")

_LETTER, _GAP = r"[^\W\d_]", r"[^\w\n]{1,3}"
HINTS: dict[str, str] = {
    # in the lower-cased text: an invisible character (else no ``zw_spaced`` view, no tag
    # run), or the start of an encoded segment (else nothing to decode)
    "invisible": _INVISIBLE_CHAR,
    "encoded": r"[a-z0-9+/_-]{16}|\\x|%[0-9a-f]{2}",
    # in the normalized text: what the ``spaced``, ``leet`` and ``rot13`` views start from
    "spaced": _LETTER + (_GAP + _LETTER) * 3,
    "leet": r"[a-z][0134578@$|!]+[a-z]|[0134578@$|!][a-z]{2}"
    r"|[a-z]{2}(?:[@$|!]\w|[0134578](?:\W|$))",
    "rot13": "|".join(sorted(_ROT13_WORDS)),
}
"""Conditions (regexes) without which a step of :func:`views` finds nothing: each is implied
by the exact check of its step (a test proves it on the development set). The pattern
library's Hyperscan pass reports them with the rules' candidates, so a text in which none
occurs skips those steps' own checks, which cost a quarter of the detector's time."""
Hints = Callable[[str], Collection[str]]
"""The names of the ``HINTS`` that occur in a text (a lower-cased or normalized view)."""


def strip_invisible(text: str) -> str:
    """Remove zero-width, bidi-control, soft-hyphen, variation-selector and tag characters."""
    return _INVISIBLE.sub("", text)


def fold_confusables(text: str) -> str:
    """Fold homoglyphs (Cyrillic/Greek/IPA look-alikes) to Latin letters, one to one."""
    return text.translate(_CONFUSABLES)


def _markup_repl(m: re.Match[str]) -> str:
    tag = m.group(1)
    if tag is None or tag in _INLINE_TAGS:
        return ""
    return " "


def strip_markup(text: str) -> str:
    """Remove HTML/XML tags (inline tags glue the word back), comment markers, emphasis."""
    return _MARKUP.sub(_markup_repl, text)


def _has_markup(text: str) -> bool:
    """Whether ``text`` holds a character that starts markup ``_MARKUP`` strips: five
    ``in`` tests (memchr) cost a tenth of one character-class search."""
    return any(map(text.__contains__, _MARKUP_CHARS))


def _unescape(m: re.Match[str]) -> str:
    return html.unescape(m.group())


def normalize(text: str) -> str:
    """The ``normalized`` view (fast path)."""
    return _normalize(text, None)


def _normalize(text: str, low: str | None, visible: bool = False) -> str:
    """``normalize(text)``; ``low``: ``text.lower()`` if already known (reused for ASCII);
    ``visible``: ``text`` is known to hold no ``_INVISIBLE`` character."""
    t = text
    if "&" in t:
        t = _ENTITY.sub(_unescape, t)
        low = None
        visible = False  # an entity may decode to an invisible character
    if not t.isascii():
        if not visible:
            t = _INVISIBLE.sub("", t)
        if not unicodedata.is_normalized("NFKC", t):
            t = unicodedata.normalize("NFKC", t)
        if _CONFUSABLE_CHARS.search(t):
            t = t.translate(_CONFUSABLES)
    # ``t is text``: nothing above changed it (the common case), so its lower case is known
    t = low if low is not None and t is text else t.lower()
    if _has_markup(t):
        t = _MARKUP.sub(_markup_repl, t)
    return t


def _sub_mapped(
    rx: re.Pattern[str], repl: Callable[[re.Match[str]], str], t: str, idx: list[int]
) -> tuple[str, list[int]]:
    out: list[str] = []
    nidx: list[int] = []
    pos = 0
    for m in rx.finditer(t):
        s, e = m.span()
        out.append(t[pos:s])
        nidx.extend(idx[pos:s])
        r = repl(m)
        out.append(r)
        nidx.extend([idx[s]] * len(r))
        pos = e
    out.append(t[pos:])
    nidx.extend(idx[pos:])
    return "".join(out), nidx


def _per_char_mapped(fn: Callable[[str], str], t: str, idx: list[int]) -> tuple[str, list[int]]:
    out: list[str] = []
    nidx: list[int] = []
    for i, ch in enumerate(t):
        r = fn(ch)
        out.append(r)
        nidx.extend([idx[i]] * len(r))
    return "".join(out), nidx


def _nfkc(ch: str) -> str:
    return unicodedata.normalize("NFKC", ch)


def _empty(_m: re.Match[str]) -> str:
    return ""


def normalize_mapped(text: str) -> tuple[str, list[int]]:
    """The ``normalized`` view with, for each of its characters, the index in ``text`` (slow)."""
    t = text
    idx = list(range(len(t)))
    if "&" in t:
        t, idx = _sub_mapped(_ENTITY, _unescape, t, idx)
    if not t.isascii():
        t, idx = _sub_mapped(_INVISIBLE, _empty, t, idx)
        if not unicodedata.is_normalized("NFKC", t):
            t, idx = _per_char_mapped(_nfkc, t, idx)
        t = t.translate(_CONFUSABLES)
        low = t.lower()
        if len(low) != len(t):
            low, idx = _per_char_mapped(str.lower, t, idx)
        t = low
    else:
        t = t.lower()
    if _has_markup(t):
        t, idx = _sub_mapped(_MARKUP, _markup_repl, t, idx)
    return t, idx


def _spaced_repl(m: re.Match[str]) -> str:
    return _NON_LETTER.sub("", m.group())


def spaced(norm: str, tokens: list[str] | None = None) -> str | None:
    """Join runs of spaced-out single letters ("i g n o r e" -> "ignore"); None if none."""
    # cheap (C-level) reject, same result: four consecutive one-character tokens
    if tokens is not None and _FOUR_SINGLES.search(" " + " ".join(tokens)) is None:
        return None
    if not _SPACED.search(norm):
        return None
    return _SPACED.sub(_spaced_repl, norm)


def spaced_mapped(norm: str, idx: list[int]) -> tuple[str, list[int]]:
    out: list[str] = []
    nidx: list[int] = []
    pos = 0
    for m in _SPACED.finditer(norm):
        s, e = m.span()
        out.append(norm[pos:s])
        nidx.extend(idx[pos:s])
        for k in range(s, e):
            ch = norm[k]
            if ch.isalpha():
                out.append(ch)
                nidx.append(idx[k])
        pos = e
    out.append(norm[pos:])
    nidx.extend(idx[pos:])
    return "".join(out), nidx


def leet(norm: str, tokens: list[str] | None = None) -> str | None:
    """Read digits/symbols inside words as letters ("1gn0r3" -> "ignore"); None if no hint."""
    if not _LEET_PRE.search(norm) or not _LEET_HINT.search(norm):
        return None
    # a token of 3+ characters that is neither all letters nor all digits (C-level filters)
    if (
        tokens is not None
        and max(map(len, filterfalse(str.isdigit, filterfalse(str.isalpha, tokens))), default=0)
        <= 2
    ):
        return None
    return translate_ascii(norm, _LEET)


def rot13(norm: str, tokens: list[str] | None = None) -> str | None:
    """The rot13 reading of the text, only when rot13-looking trigger words occur."""
    if _ROT13_WORDS.isdisjoint(tokenize(norm) if tokens is None else tokens):
        return None
    return translate_ascii(norm, _ROT13)


def _plausible(raw: bytes) -> str | None:
    if len(raw) < 6:
        return None
    s = raw.decode("utf-8", "replace")
    bad = len(_BAD_CHARS.findall(s)) + s.count("\ufffd")
    if bad * 20 > len(s):
        return None
    letters = _LETTERS.findall(s)
    if len(letters) < 2 or sum(map(len, letters)) * 2 < len(s):
        return None
    return s


def _b64(cand: str) -> str | None:
    if cand.isalpha() and (cand.islower() or cand.isupper()):
        return None
    body = cand.rstrip("=")
    if len(body) % 4 == 1:
        body = body[:-1]
    body += "=" * (-len(body) % 4)
    alt = b"-_" if ("-" in body or "_" in body) else None
    try:
        raw = base64.b64decode(body, altchars=alt)
    except (binascii.Error, ValueError):
        return None
    return _plausible(raw)


def _hex(cand: str) -> str | None:
    digits = cand.replace("\\x", "").replace(" ", "").replace(":", "")
    if digits.isdigit():
        return None
    if len(digits) % 2:
        digits = digits[:-1]
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        return None
    return _plausible(raw)


def _url(cand: str) -> str | None:
    s = unquote_plus(cand)
    return s if s != cand and _plausible(s.encode("utf-8", "replace")) else None


def _tags(cand: str) -> str | None:
    return "".join(chr(ord(c) - 0xE0000) for c in cand)


def _masked(text: str, mask: bytes) -> bytes:
    """The UTF-8 of ``text`` mapped by ``mask`` (multi-byte characters map to several bytes)."""
    return text.encode("utf-8", "surrogatepass").translate(mask)


def _base64_runs(text: str) -> Iterator[tuple[int, int]]:
    """The spans of ``[A-Za-z0-9+/_-]{16,}={0,2}`` in ``text``, as ``finditer`` gives them."""
    data = text.encode("utf-8", "surrogatepass")
    masked = data.translate(_B64_MASK)
    pos = masked.find(_RUN)  # the start of a run: the search never starts inside one
    while pos >= 0:
        end = masked.find(b" ", pos + _MIN_RUN)
        end = len(masked) if end < 0 else end
        end += 2 if data.startswith(b"==", end) else 1 if data.startswith(b"=", end) else 0
        if len(data) == len(text):
            yield pos, end
        else:  # byte offsets -> character offsets (the run itself is ASCII)
            start = len(data[:pos].decode("utf-8", "surrogatepass"))
            yield start, start + end - pos
        pos = masked.find(_RUN, end)


def _regex_spans(rx: re.Pattern[str]) -> Callable[[str], Iterator[tuple[int, int]]]:
    def spans(text: str) -> Iterator[tuple[int, int]]:
        return (m.span() for m in rx.finditer(text))

    return spans


_DECODERS: tuple[
    tuple[str, Callable[[str], Iterable[tuple[int, int]]], Callable[[str], str | None]], ...
] = (
    ("base64", _base64_runs, _b64),
    ("hex", _regex_spans(_HEX), _hex),
    ("url", _regex_spans(_URL), _url),
)


def decode_segments(
    text: str, tokens: list[str] | None = None, *, visible: bool = False
) -> list[tuple[str, int, int, str]]:
    """Plausible encoded segments of ``text``: (kind, start, end, decoded), at most MAX_DECODED.

    ``visible``: ``text`` is known to hold no ``_INVISIBLE`` character (so no tag character).
    """
    found: list[tuple[str, int, int, str]] = []
    long_token = tokens is None or (bool(tokens) and max(map(len, tokens)) >= 16)
    if not visible and not text.isascii() and _TAG_RUN.search(text):
        for m in _TAG_RUN.finditer(text):
            found.append(("unicode_tags", m.start(), m.end(), _tags(m.group()) or ""))
            if len(found) >= MAX_DECODED:
                return found
    for kind, spans, dec in _DECODERS:
        if kind == "url" and "%" not in text:
            continue
        if kind == "base64" and not long_token:
            continue
        if (
            kind == "hex"
            and "\\x" not in text
            and not (long_token and _RUN in _masked(text, _HEX_MASK))
        ):
            continue
        for start, end in spans(text):
            out = dec(text[start : min(end, start + MAX_ENCODED_CHARS)])
            if out:
                found.append((kind, start, end, out))
                if len(found) >= MAX_DECODED:
                    return found
    return found


class View:
    """A reading of a segment's text; maps its spans back to the original segment text."""

    __slots__ = ("_idx", "_mapper", "fixed", "name", "squashed", "text", "tokens")

    def __init__(
        self,
        name: str,
        text: str,
        mapper: Callable[[], tuple[str, list[int]]] | None = None,
        fixed: tuple[int, int] | None = None,
    ) -> None:
        self.name = name
        self.text = text
        self._mapper = mapper
        self._idx: list[int] | None = None
        self.fixed = fixed
        self.tokens: list[str] | None = None
        self.squashed = False

    def to_original(
        self, start: int, end: int, pattern: re.Pattern[str] | None = None
    ) -> tuple[int, int]:
        """Map [start, end) of this view to the original text (slow path, on hits only)."""
        if self.fixed is not None:
            return self.fixed
        if self._mapper is None:
            return start, end
        mapped, idx = self._mapper()
        if mapped != self.text and pattern is not None:
            # The per-character path differs (rare: combining sequences); find the hit again.
            m = pattern.search(mapped)
            if m is None or not idx:
                return (idx[0], idx[-1] + 1) if idx else (0, 0)
            start, end = m.span()
        if not idx or start >= len(idx):
            return (0, 0)
        end = max(start + 1, min(end, len(idx)))
        return idx[start], idx[end - 1] + 1


def views(
    text: str, depth: int = 0, span: tuple[int, int] | None = None, hints: Hints | None = None
) -> list[View]:
    """All views of ``text`` worth scanning (``span``: the encoded segment, for decoded text;
    ``hints``: which ``HINTS`` occur in a text, so that absent ones skip their steps)."""
    out: list[View] = []
    low = text.lower()
    fixed = span
    if fixed is None and len(low) != len(text):

        def low_map() -> tuple[str, list[int]]:
            return _per_char_mapped(str.lower, text, list(range(len(text))))

        out.append(View("text", low, low_map))
    else:
        out.append(View("text", low, None, fixed))
    # The hints of the lower-cased text come with its rules' candidates (no extra pass).
    in_low: Collection[str] = HINTS if hints is None else hints(low)
    # One scan for zero-width / bidi / tag characters instead of three (normalizing, the
    # zw_spaced check and the tag-run check all look for a subset of them): most text has none.
    if hints is None:
        visible = text.isascii() or _INVISIBLE.search(text) is None
    else:
        visible = text.isascii() or "invisible" not in in_low
    norm = _normalize(text, low, visible)
    cache: dict[str, tuple[str, list[int]]] = {}

    def norm_map() -> tuple[str, list[int]]:
        if "n" not in cache:
            cache["n"] = normalize_mapped(text)
        return cache["n"]

    in_norm = in_low if hints is None or norm == low else hints(norm)
    toks = tokenize(norm)
    if norm != low:
        out.append(View("normalized", norm, norm_map, fixed))
        out[-1].tokens = toks
    else:
        out[0].tokens = toks
    sp = spaced(norm, toks) if "spaced" in in_norm else None
    if sp is not None:

        def sp_map() -> tuple[str, list[int]]:
            n, idx = norm_map()
            return spaced_mapped(n, idx)

        out.append(View("spaced", sp, sp_map, fixed))
        out[-1].squashed = True
    lt = leet(norm, toks) if "leet" in in_norm else None
    if lt is not None:

        def lt_map() -> tuple[str, list[int]]:
            n, idx = norm_map()
            return translate_ascii(n, _LEET), idx

        out.append(View("leet", lt, lt_map, fixed))
    r13 = rot13(norm, toks) if "rot13" in in_norm else None
    if r13 is not None:

        def r13_map() -> tuple[str, list[int]]:
            n, idx = norm_map()
            return translate_ascii(n, _ROT13), idx

        out.append(View("rot13", r13, r13_map, fixed))
    if not visible and _ZW_SEP.search(text):
        alt = _ZW_ONE.sub(" ", text)

        def zw_map() -> tuple[str, list[int]]:
            return normalize_mapped(alt)

        out.append(View("zw_spaced", normalize(alt), zw_map, fixed))
    if depth < MAX_DEPTH and (not visible or "encoded" in in_low):
        for kind, s, e, decoded in decode_segments(text, toks, visible=visible):
            inner = (s, e) if span is None else span
            for v in views(decoded, depth + 1, inner, hints):
                v.name = kind if v.name == "text" else f"{kind}+{v.name}"
                out.append(v)
    return out
