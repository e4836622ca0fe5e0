"""The compiled policy: what the layers read at request time."""

from __future__ import annotations

from dataclasses import dataclass

from authz_service.layers.cost.settings import CostRoute, CostSection
from authz_service.layers.identity.settings import IdentityRoute, IdentitySettings
from authz_service.layers.protocol.settings import ProtocolSettings
from authz_service.layers.routing.settings import RoutingRoute, RoutingSection
from authz_service.layers.semantics.settings import SemanticsRoute
from authz_service.layers.syntax.settings import SyntaxRoute
from authz_service.policy.routes import HostMatcher, PathMatcher

KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    hosts: HostMatcher
    path: PathMatcher
    methods: frozenset[str]
    protocol: ProtocolSettings
    identity: IdentityRoute
    syntax: SyntaxRoute
    semantics: SemanticsRoute
    cost: CostRoute
    routing: RoutingRoute


@dataclass(frozen=True, slots=True)
class Unmatched:
    """What happens to a request no route matches: deny with ``status``, or use ``route``."""

    status: int = 404
    route: str | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    decision_timeout_ms: int = 450
    """Per-request deadline; keep it under Envoy's ext_authz ``timeout`` (500 ms in the demo)."""
    envoy_max_request_bytes: int = 8 * 1024 * 1024
    """Envoy's ``with_request_body.max_request_bytes``: the largest body Envoy sends us."""


@dataclass(frozen=True, slots=True)
class Policy:
    source: str
    routes: tuple[Route, ...]
    unmatched: Unmatched
    settings: Settings
    identity: IdentitySettings | None = None
    """Identity providers; ``None`` when the policy authenticates nobody."""
    cost: CostSection | None = None
    """Limits, model token rules and the quota store; ``None`` when nothing is limited."""
    routing: RoutingSection | None = None
    """Providers and how to choose among them; ``None`` when nothing is routed."""

    @property
    def max_body_bytes(self) -> int:
        """The largest body a ``CheckRequest`` may carry under this policy."""
        largest_route = max((route.protocol.max_body_bytes for route in self.routes), default=0)
        return max(largest_route, self.settings.envoy_max_request_bytes)
