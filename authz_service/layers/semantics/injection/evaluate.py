"""Measure the detector on a labelled JSONL (``{"text", "label": 0|1, "lang"}``).

Reports precision, recall, false-positive rate, CPU time per KB of prompt (``time.process_time``
around ``scan`` only; the median of several passes, each with the detector's cache emptied,
because a shared virtual machine can slow one pass by half), recall/FPR per language and the
threshold. Misses and false alarms are
reported as row indexes only — never texts.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from authz_service.layers.semantics.injection.detector import InjectionDetector
from authz_service.layers.semantics.injection.types import TextSegment

__all__ = [
    "DEFAULT_PASSES",
    "DEFAULT_THRESHOLD",
    "EvalReport",
    "evaluate",
    "format_report",
    "run_eval",
]

# The score at or above which the policy default denies (chosen by cross-validation in
# scripts/train_injection_model.py; see the numbers it prints).
DEFAULT_THRESHOLD: float = 0.64
DEFAULT_PASSES = 5
_MAX_IDS = 50


@dataclass(frozen=True, slots=True)
class EvalReport:
    threshold: float
    detectors: tuple[str, ...]
    n: int
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    fpr: float
    cpu_us_per_kb: float  # the median of the passes
    total_kb: float
    cpu_passes: tuple[float, ...] = ()  # µs per KB, one per pass
    # lang -> (n_pos, recall, n_neg, fpr)
    per_lang: dict[str, tuple[int, float, int, float]] = field(default_factory=dict)
    # category of the top finding -> number of true positives it decided
    by_category: dict[str, int] = field(default_factory=dict)
    missed: tuple[int, ...] = ()  # row indexes of false negatives (first 50)
    false_alarms: tuple[int, ...] = ()  # row indexes of false positives (first 50)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def evaluate(
    detector: InjectionDetector,
    rows: Iterable[Mapping[str, Any]],
    threshold: float,
    passes: int = 1,
) -> EvalReport:
    """Scores from the first pass over ``rows``; CPU time from ``passes`` passes."""
    tp = fp = tn = fn = 0
    cpu = 0.0
    nbytes = 0
    langs: dict[str, list[int]] = {}  # lang -> [pos, tp, neg, fp]
    cats: dict[str, int] = {}
    missed: list[int] = []
    alarms: list[int] = []
    segments: list[list[TextSegment]] = []
    for i, row in enumerate(rows):
        text = row.get("text")
        label = row.get("label")
        if not isinstance(text, str) or label not in (0, 1):
            continue
        lang = str(row.get("lang") or "?")
        seg = [TextSegment("", "user", text)]
        segments.append(seg)
        t0 = time.process_time()
        verdict = detector.scan(seg)
        cpu += time.process_time() - t0
        nbytes += len(text.encode("utf-8"))
        hit = verdict.score >= threshold
        stats = langs.setdefault(lang, [0, 0, 0, 0])
        if label == 1:
            stats[0] += 1
            if hit:
                tp += 1
                stats[1] += 1
                top = verdict.findings[0]
                cats[top.category] = cats.get(top.category, 0) + 1
            else:
                fn += 1
                if len(missed) < _MAX_IDS:
                    missed.append(i)
        else:
            stats[2] += 1
            if hit:
                fp += 1
                stats[3] += 1
                if len(alarms) < _MAX_IDS:
                    alarms.append(i)
            else:
                tn += 1
    kb = nbytes / 1024
    cpu_passes = [cpu]
    for _ in range(passes - 1):
        detector.forget()
        t0 = time.process_time()
        for seg in segments:
            detector.scan(seg)
        cpu_passes.append(time.process_time() - t0)
    per_kb = tuple(c * 1e6 / kb if kb else 0.0 for c in cpu_passes)
    return EvalReport(
        threshold=threshold,
        detectors=tuple(sorted(detector.detectors)),
        n=tp + fp + tn + fn,
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        fpr=_ratio(fp, fp + tn),
        cpu_us_per_kb=statistics.median(per_kb),
        total_kb=kb,
        cpu_passes=per_kb,
        per_lang={
            k: (v[0], _ratio(v[1], v[0]), v[2], _ratio(v[3], v[2]))
            for k, v in sorted(langs.items(), key=lambda kv: (-(kv[1][0] + kv[1][2]), kv[0]))
        },
        by_category=dict(sorted(cats.items())),
        missed=tuple(missed),
        false_alarms=tuple(alarms),
    )


def format_report(report: EvalReport) -> str:
    r = report
    lines = [
        f"detectors: {', '.join(r.detectors)}   threshold: {r.threshold:.2f}   rows: {r.n}",
        f"precision {r.precision:.3f}   recall {r.recall:.3f}   false-positive rate {r.fpr:.3f}",
        f"tp {r.tp}  fp {r.fp}  tn {r.tn}  fn {r.fn}",
        f"CPU {r.cpu_us_per_kb:.1f} us per KB of prompt ({r.total_kb:.0f} KB scanned; "
        + _passes(r.cpu_passes)
        + ")",
        "targets: recall >= 0.90 at FPR <= 0.03, <= 200 us/KB: "
        + ("met" if r.recall >= 0.9 and r.fpr <= 0.03 and r.cpu_us_per_kb <= 200 else "NOT met"),
        "per language (n_pos recall | n_neg fpr):",
    ]
    for lang, (npos, rec, nneg, fpr) in r.per_lang.items():
        lines.append(f"  {lang:4} {npos:5d} {rec:6.3f} | {nneg:5d} {fpr:6.3f}")
    if r.by_category:
        cats = ", ".join(f"{k} {v}" for k, v in r.by_category.items())
        lines.append(f"true positives by top finding's category: {cats}")
    if r.missed:
        lines.append("missed row indexes (first 50): " + " ".join(map(str, r.missed)))
    if r.false_alarms:
        lines.append("false-alarm row indexes (first 50): " + " ".join(map(str, r.false_alarms)))
    return "\n".join(lines)


def _passes(per_kb: tuple[float, ...]) -> str:
    if len(per_kb) < 2:
        return "one pass"
    return f"median of {len(per_kb)} passes, {min(per_kb):.0f}-{max(per_kb):.0f}"


def load_rows(path: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                obj = orjson.loads(line)
                if isinstance(obj, dict):
                    rows.append(obj)
    return rows


def run_eval(
    data: Path,
    threshold: float = DEFAULT_THRESHOLD,
    detectors: frozenset[str] = frozenset({"patterns", "classifier"}),
    passes: int = DEFAULT_PASSES,
) -> int:
    """Print the report for ``data``; returns 0 (targets are reported, not enforced)."""
    detector = InjectionDetector(detectors)
    print(format_report(evaluate(detector, load_rows(data), threshold, passes)))
    return 0
