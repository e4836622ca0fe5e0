"""How far the ``estimate`` tokenizer is from o200k_base and cl100k_base, per language.

Reads the prompt-injection dev set (``../shared/datasets/prompt_injection/dev.jsonl`` beside
the repository, 23 languages) and prints, per language and overall, the mean relative error
(bias: + means the estimate is higher), the mean absolute percentage error, the share of texts
underestimated and the worst underestimate, against each encoding.

    .venv/bin/python -m benchmarks.token_estimate_error [path/to/dev.jsonl]
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from authz_service.layers.cost.tokenizers import Tokenizer, load_tokenizer

DEV_SET = Path(__file__).resolve().parents[2] / "shared/datasets/prompt_injection/dev.jsonl"
REFERENCES = ("o200k_base", "cl100k_base")


@dataclass
class Errors:
    """Relative errors ``(estimate - reference) / reference`` of a group of texts."""

    values: list[float] = field(default_factory=list)

    @property
    def bias(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def mape(self) -> float:
        return sum(abs(value) for value in self.values) / len(self.values)

    @property
    def under_share(self) -> float:
        return sum(value < 0 for value in self.values) / len(self.values)

    @property
    def worst(self) -> float:
        return min(self.values)


def measure(
    texts: list[tuple[str, str]], estimate: Tokenizer, reference: Tokenizer
) -> dict[str, Errors]:
    """Errors per language of ``(lang, text)`` pairs, and overall under ``"all"``."""
    errors: dict[str, Errors] = defaultdict(Errors)
    for lang, text in texts:
        expected = reference.count(text)
        relative = (estimate.count(text) - expected) / expected
        errors[lang].values.append(relative)
        errors["all"].values.append(relative)
    return errors


def read_dev_set(path: Path) -> list[tuple[str, str]]:
    """``(lang, text)`` of each row of a dev-set JSONL file."""
    with path.open("rb") as lines:
        rows = [orjson.loads(line) for line in lines if line.strip()]
    return [(row["lang"], row["text"]) for row in rows]


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEV_SET
    texts = read_dev_set(path)
    estimate = load_tokenizer("estimate")
    results = {name: measure(texts, estimate, load_tokenizer(name)) for name in REFERENCES}
    counts: dict[str, int] = defaultdict(int)
    for lang, _ in texts:
        counts[lang] += 1
    counts["all"] = len(texts)
    header = f"{'lang':<5}{'texts':>6}"
    for name in REFERENCES:
        header += f" | {name + ' bias':>16}{'MAPE':>7}{'under':>7}{'worst':>7}"
    print(header)
    print("-" * len(header))
    langs = [*sorted(lang for lang in counts if lang != "all"), "all"]
    for lang in langs:
        line = f"{lang:<5}{counts[lang]:>6}"
        for name in REFERENCES:
            errors = results[name][lang]
            line += (
                f" | {errors.bias:>+16.0%}{errors.mape:>7.0%}"
                f"{errors.under_share:>7.1%}{errors.worst:>+7.0%}"
            )
        print(line)
    for name in REFERENCES:
        biases = {lang: results[name][lang].bias for lang in langs if lang != "all"}
        low = min(biases, key=biases.__getitem__)
        high = max(biases, key=biases.__getitem__)
        print(
            f"{name}: per-language bias from {biases[low]:+.0%} ({low}) "
            f"to {biases[high]:+.0%} ({high})"
        )


if __name__ == "__main__":
    main()
