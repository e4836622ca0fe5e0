"""Route matching on host, path and method, compiled once per policy load."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from authz_service.policy.model import Route

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_TEMPLATE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

PathKind = Literal["exact", "prefix", "template"]


class TemplateError(ValueError):
    """A path template that cannot be compiled."""


@dataclass(frozen=True, slots=True)
class PathMatcher:
    kind: PathKind
    pattern: str
    _regex: re.Pattern[str] | None = None

    @classmethod
    def compile(cls, kind: PathKind, pattern: str) -> PathMatcher:
        if kind != "template":
            return cls(kind, pattern)
        return cls(kind, pattern, _compile_template(pattern))

    def match(self, path: str) -> Mapping[str, str] | None:
        """The template parameters if ``path`` matches (empty for exact/prefix), else None."""
        if self.kind == "exact":
            return _NO_PARAMS if path == self.pattern else None
        if self.kind == "prefix":
            return _NO_PARAMS if path.startswith(self.pattern) else None
        assert self._regex is not None
        found = self._regex.fullmatch(path)
        return MappingProxyType(found.groupdict()) if found else None


def _compile_template(template: str) -> re.Pattern[str]:
    """``/v1/models/{model}`` → a regex where each parameter is one non-empty segment."""
    if not template.startswith("/"):
        raise TemplateError("a path template starts with /")
    parts: list[str] = []
    names: set[str] = set()
    position = 0
    for found in _TEMPLATE_PARAM.finditer(template):
        literal = template[position : found.start()]
        if "{" in literal or "}" in literal:
            raise TemplateError(f"malformed parameter near {literal!r}")
        name = found.group(1)
        if name in names:
            raise TemplateError(f"parameter {{{name}}} appears twice")
        names.add(name)
        parts.append(re.escape(literal) + f"(?P<{name}>[^/]+)")
        position = found.end()
    rest = template[position:]
    if "{" in rest or "}" in rest:
        raise TemplateError(f"malformed parameter near {rest!r}")
    return re.compile("".join(parts) + re.escape(rest))


@dataclass(frozen=True, slots=True)
class HostMatcher:
    """Exact names and ``*.suffix`` wildcards; no names matches every host."""

    exact: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def compile(cls, hosts: Sequence[str]) -> HostMatcher:
        names = [host.lower() for host in hosts]
        return cls(
            exact=frozenset(name for name in names if not name.startswith("*")),
            suffixes=tuple(name[1:] for name in names if name.startswith("*.")),
        )

    def match(self, host: str) -> bool:
        if not self.exact and not self.suffixes:
            return True
        name = _strip_port(host.lower())
        return name in self.exact or name.endswith(self.suffixes)


def _strip_port(host: str) -> str:
    if host.startswith("["):  # IPv6 literal
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


@dataclass(frozen=True, slots=True)
class Resolution:
    route: Route | None
    params: Mapping[str, str] = field(default_factory=lambda: _NO_PARAMS)
    methods_on_path: frozenset[str] = frozenset()
    """Set when the path matched but the method did not: the ``Allow`` of a 405."""


class RouteTable:
    """First match wins, in the order of the policy file."""

    def __init__(self, routes: Sequence[Route], fallback: Route | None) -> None:
        self._routes = tuple(routes)
        self._fallback = fallback

    def resolve(self, host: str, method: str, path: str) -> Resolution:
        methods_on_path: set[str] = set()
        for route in self._routes:
            if not route.hosts.match(host):
                continue
            params = route.path.match(path)
            if params is None:
                continue
            if method in route.methods:
                return Resolution(route, params)
            methods_on_path |= route.methods
        if methods_on_path:
            return Resolution(None, methods_on_path=frozenset(methods_on_path))
        return Resolution(self._fallback)
