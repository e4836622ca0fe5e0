"""Path templates (``/v1/models/{model}``), exact paths and prefixes, compiled once.

Shared by the policy's routes and the syntax layer's OpenAPI operations, so it depends
on nothing else of the project."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z0-9_.~-]+)\}")
"""Parameter names as OpenAPI writes them (``{model}``, ``{model-id}``, ``{model.id}``)."""

PathKind = Literal["exact", "prefix", "template"]


class TemplateError(ValueError):
    """A path template that cannot be compiled."""


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: PathKind
    pattern: str
    _regex: re.Pattern[str] | None = None
    _names: tuple[str, ...] = ()
    """Template parameter names, in the order of the regex's groups."""

    @classmethod
    def compile(cls, kind: PathKind, pattern: str) -> PathMatcher:
        if kind != "template":
            return cls(kind, pattern)
        regex, names = _compile_template(pattern)
        return cls(kind, pattern, regex, names)

    def match(self, path: str) -> Mapping[str, str] | None:
        """The template parameters if ``path`` matches (empty for exact/prefix), else None."""
        if self.kind == "exact":
            return _NO_PARAMS if path == self.pattern else None
        if self.kind == "prefix":
            return _NO_PARAMS if path.startswith(self.pattern) else None
        assert self._regex is not None
        found = self._regex.fullmatch(path)
        return (
            MappingProxyType(dict(zip(self._names, found.groups(), strict=True))) if found else None
        )


def _compile_template(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """``/v1/models/{model}`` → a regex where each parameter is one non-empty segment."""
    if not template.startswith("/"):
        raise TemplateError("a path template starts with /")
    parts: list[str] = []
    names: list[str] = []
    position = 0
    for found in _TEMPLATE_PARAM.finditer(template):
        literal = template[position : found.start()]
        if "{" in literal or "}" in literal:
            raise TemplateError(f"malformed parameter near {literal!r}")
        name = found.group(1)
        if name in names:
            raise TemplateError(f"parameter {{{name}}} appears twice")
        names.append(name)
        parts.append(re.escape(literal) + "([^/]+)")
        position = found.end()
    rest = template[position:]
    if "{" in rest or "}" in rest:
        raise TemplateError(f"malformed parameter near {rest!r}")
    return re.compile("".join(parts) + re.escape(rest)), tuple(names)
