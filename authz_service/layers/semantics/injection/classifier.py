"""The statistical detector: a logistic regression over sparse text features.

Features (of the ``normalized`` view): word unigrams and bigrams (tokens split on whitespace
and ASCII punctuation, so scripts with combining marks stay whole), character bigrams of
CJK/Thai runs (no spaces there), one feature per pattern rule that fired (so weak pattern cues
combine), and a length bucket. Token counts are scaled by 1/sqrt(number of tokens).

The model file (``model.json``, next to this module) stores only the non-zero weights, keyed by
the feature string itself (no hashing, so no collisions): ``{"version", "bias", "weights"}``.
It is trained by ``scripts/train_injection_model.py`` and read once per process.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from authz_service.layers.semantics.injection import _regex as rx

__all__ = ["MODEL_PATH", "Model", "features", "load_model"]

MODEL_PATH = Path(__file__).with_name("model.json")


def features(
    norm: str,
    rules: Iterable[str] = (),
    tokens: list[str] | None = None,
    bigrams: list[str] | None = None,
) -> tuple[list[str], list[str]]:
    """(scaled text features, unscaled features) of a normalized text (``tokens`` and their
    ``bigrams``, if already known)."""
    toks = rx.tokenize(norm) if tokens is None else tokens
    if bigrams is None or tokens is None:
        bigrams = list(map(" ".join, itertools.pairwise(toks)))
    feats = toks + bigrams
    for run in rx.cjk_runs(norm):
        feats.extend("#" + run[i : i + 2] for i in range(len(run) - 1))
    extra = ["@" + r for r in sorted(set(rules))]
    extra.append("%len" + str(min(14, int(math.log2(len(norm) + 1)))))
    return feats, extra


class Model:
    """Logistic regression weights; ``predict`` gives P(injection)."""

    __slots__ = ("_cjk", "_lengths", "_rules", "_words", "bias", "weights")

    def __init__(self, bias: float, weights: dict[str, float]) -> None:
        self.bias = bias
        self.weights = weights
        # For ``predict``, the weights the hot loop reads, laid out for the CPU caches (they
        # miss there: the rest of a request's work evicts them). One table holds word
        # unigrams (keyed by the token) and bigrams (keyed by the token pair; tokens never
        # contain spaces, so "a b" <-> ("a", "b"), and no bigram strings are built to score a
        # text). Its mixed key types make CPython keep each entry's hash beside it, so a probe
        # for an unknown token compares hashes without reading a key object; the pairs hold
        # the unigrams' own token strings, and equal weights share one float. Measured: ~4 %
        # less time per scan than separate string- and pair-keyed tables.
        self._words: dict[str | tuple[str, ...], float] = {}
        # CJK character bigrams keyed without their "#": looked up as ``a + b`` of two
        # characters (C-level map), not as "#" + a slice built per character in Python.
        self._cjk: dict[str, float] = {}
        self._rules: dict[str, float] = {}  # "@rule" features, by rule id
        tokens: dict[str, str] = {}
        floats: dict[float, float] = {}
        for k, v in weights.items():
            v = floats.setdefault(v, v)
            if k.startswith("#"):
                self._cjk[k[1:]] = v
            elif k.startswith("@"):
                self._rules[k[1:]] = v
            elif not k.startswith("%"):
                parts = tuple(tokens.setdefault(t, t) for t in k.split(" "))
                self._words[parts if len(parts) > 1 else parts[0]] = v
        self._lengths = [weights.get(f"%len{i}", 0.0) for i in range(15)]

    def logit(self, scaled: list[str], extra: list[str]) -> float:
        get = self.weights.get
        s = sum(map(get, scaled, itertools.repeat(0.0)))  # x + 0.0 == x: same sum as before
        z = self.bias + (s / math.sqrt(len(scaled)) if scaled else 0.0)
        return z + sum(filter(None, map(get, extra)))

    def _text_logit(self, norm: str, rules: Iterable[str], toks: list[str]) -> float:
        """``logit(*features(norm, rules, toks))`` without building the feature strings: the
        same terms added in the same order, so the same float."""
        zero = itertools.repeat(0.0)
        get = self._words.get
        s = sum(map(get, toks, zero))
        s = sum(map(get, rx.adjacent(toks), zero), s)
        n = 2 * len(toks) - 1 if toks else 0
        cjk = self._cjk.get
        for run in rx.cjk_runs(norm):
            s = sum(map(cjk, map(str.__add__, run, run[1:]), zero), s)
            n += len(run) - 1
        z = self.bias + (s / math.sqrt(n) if n else 0.0)
        extra = sum(map(self._rules.get, sorted(set(rules)), zero))
        return z + (extra + self._lengths[min(14, int(math.log2(len(norm) + 1)))])

    def predict(
        self,
        norm: str,
        rules: Iterable[str] = (),
        tokens: list[str] | None = None,
        bigrams: list[str] | None = None,  # unused (the pairs of ``tokens``); kept for callers
    ) -> float:
        toks = rx.tokenize(norm) if tokens is None else tokens
        z = self._text_logit(norm, rules, toks)
        if z < -35.0:
            return 0.0
        return 1.0 / (1.0 + math.exp(-z))

    @classmethod
    def from_json(cls, data: Any) -> Model:
        if not isinstance(data, dict) or not isinstance(data.get("weights"), dict):
            raise ValueError("bad injection model file")
        return cls(float(data["bias"]), {str(k): float(v) for k, v in data["weights"].items()})

    def to_json(self) -> dict[str, Any]:
        return {
            "version": 1,
            "bias": round(self.bias, 5),
            "weights": {k: round(v, 4) for k, v in sorted(self.weights.items()) if round(v, 4)},
        }


@functools.cache
def load_model(path: Path = MODEL_PATH) -> Model:
    """Read the model file once per process (cached)."""
    return Model.from_json(orjson.loads(path.read_bytes()))
