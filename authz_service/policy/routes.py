"""Route matching on host, path and method, compiled once per policy load."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from authz_service.path_template import PathMatcher, TemplateError

if TYPE_CHECKING:
    from authz_service.policy.model import Route

__all__ = ["HostMatcher", "PathMatcher", "Resolution", "RouteTable", "TemplateError"]

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


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
