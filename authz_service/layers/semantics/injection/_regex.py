"""Shared tokenizer regexes."""

from __future__ import annotations

import re

# A token: a run of anything but whitespace and ASCII / CJK / Devanagari punctuation.
TOKEN = re.compile(r"[^\s!-/:-@\[-`{-~\u3000-\u303f\uff01-\uff0f\u0964\u0965]+")
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]{2,}")
