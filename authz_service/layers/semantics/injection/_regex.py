"""Shared tokenizer regexes, and the byte-level translation they and the views use."""

from __future__ import annotations

import re
import string

__all__ = ["CJK", "TOKEN", "tokenize", "translate_ascii"]

# A token: a run of anything but whitespace and ASCII / CJK / Devanagari punctuation.
TOKEN = re.compile(r"[^\s!-/:-@\[-`{-~\u3000-\u303f\uff01-\uff0f\u0964\u0965]+")
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]{2,}")

# ASCII fast path: ASCII punctuation -> space, then ``str.split`` (its whitespace set equals
# ``\s`` on ASCII), about twice as fast as ``TOKEN.findall`` with the same result.
_PUNCT_TO_SPACE = bytes.maketrans(
    string.punctuation.encode("ascii"), b" " * len(string.punctuation)
)
# The separators of TOKEN outside ASCII that are not whitespace (U+3000 is): mapped to a space
# before the UTF-8 fast path below.
_OTHER_PUNCT = re.compile("[\u3001-\u303f\uff01-\uff0f\u0964\u0965]")


def translate_ascii(text: str, table: bytes) -> str:
    """``text`` with its ASCII characters mapped by ``table`` (a ``bytes.translate`` table that
    maps ASCII to ASCII), done on the UTF-8 bytes: ASCII bytes never occur inside a multi-byte
    sequence, and "surrogatepass" round-trips lone surrogates. Faster than ``str.translate``
    on ASCII text, ~20x faster on other text (no per-character lookups)."""
    if text.isascii():
        return text.encode("ascii").translate(table).decode("ascii")
    return text.encode("utf-8", "surrogatepass").translate(table).decode("utf-8", "surrogatepass")


def tokenize(text: str) -> list[str]:
    """``TOKEN.findall(text)``, faster (same tokens) on any text: ASCII punctuation -> space,
    then ``str.split`` (same whitespace set as the regex)."""
    if not text.isascii():
        # ~1.2x faster than the regex on non-ASCII text (CJK/Devanagari punctuation first)
        text = _OTHER_PUNCT.sub(" ", text)
    return translate_ascii(text, _PUNCT_TO_SPACE).split()
