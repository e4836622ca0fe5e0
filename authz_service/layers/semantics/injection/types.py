"""Value types of the prompt-injection detector (re-exported by the package).

Named tuples rather than frozen dataclasses: as immutable and typed, and built ~3x faster
(no per-field ``object.__setattr__``), which counts at several per scanned text."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Finding", "TextSegment", "Verdict"]


class TextSegment(NamedTuple):
    """One piece of text the model will read, and where it sits in the request body."""

    pointer: str  # JSON pointer in the body, e.g. "/messages/1/content" ("" = the whole body)
    role: str | None  # "system" | "developer" | "user" | "assistant" | "tool" | None
    text: str


class Finding(NamedTuple):
    """One detector hit. Never carries the prompt text: only its position."""

    detector: str  # "patterns" | "classifier"
    rule: str  # a pattern id like "instruction_override.ignore_previous", or "classifier"
    category: str  # instruction_override | prompt_extraction | role_hijack | fake_delimiter
    # | tool_hijack | statistical
    score: float  # 0..1
    pointer: str  # the segment's pointer
    start: int  # span in the original segment text
    end: int
    via: str  # the normalization view that matched ("text", "normalized", "base64", ...)


class Verdict(NamedTuple):
    """The result of a scan: the highest score and up to five findings, highest first."""

    score: float
    findings: tuple[Finding, ...]
