"""Prompt-injection detection for requests to LLMs (semantic layer).

``extract_segments`` pulls the text the model will read out of a request body;
``InjectionDetector.scan`` normalizes it against evasion (see ``normalize``), runs the pattern
library (``patterns``) on every view and the statistical classifier (``classifier``), and returns
a :class:`Verdict` whose findings name the detector, rule, category and the span in the ORIGINAL
segment text — never the text itself. ``evaluate`` measures it on a labelled JSONL.
"""

from __future__ import annotations

from authz_service.layers.semantics.injection.detector import InjectionDetector
from authz_service.layers.semantics.injection.extract import extract_segments
from authz_service.layers.semantics.injection.types import Finding, TextSegment, Verdict

__all__ = ["Finding", "InjectionDetector", "TextSegment", "Verdict", "extract_segments"]
