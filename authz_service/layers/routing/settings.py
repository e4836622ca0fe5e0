"""The routing layer's part of the policy: the providers (top-level ``routing:``) and the
per-route ``routing:`` block that turns routing on for a route."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from authz_service.layers.syntax.llm import ANY_TIER

KeyPath = tuple[str | int, ...]
Strategy = Literal["cheapest", "fastest", "cheapest_within_target", "weighted"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)


@dataclass(frozen=True, slots=True)
class ServedModel:
    name: str
    """The model the provider runs for the requested one (``gpt-4o-mini`` → ``llama-3-8b``)."""
    tiers: frozenset[str] | None = None
    """Tiers this mapping is for (``None``: the provider's tiers)."""


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    route_value: str
    """What the routing header carries for Envoy's route table."""
    cluster: str
    """Envoy's cluster name for this provider: how access-log entries are attributed."""
    models: Mapping[str, ServedModel]
    input_per_1k: float
    output_per_1k: float
    tiers: frozenset[str]
    weight: float
    latency_target_ms: float

    def serves(self, model: str, tier: str) -> ServedModel | None:
        if not (ANY_TIER in self.tiers or tier in self.tiers):
            return None
        served = self.models.get(model)
        if served is None or (served.tiers is not None and tier not in served.tiers):
            return None
        return served

    def price(self, prompt_tokens: int, output_tokens: int) -> float:
        return prompt_tokens / 1000 * self.input_per_1k + output_tokens / 1000 * self.output_per_1k


@dataclass(frozen=True, slots=True)
class HealthLimits:
    ewma_alpha: float = 0.3
    """Weight of the newest observation in the latency and error-rate averages."""
    min_samples: int = 3
    """Observations before a provider can be judged unhealthy."""
    max_error_rate: float = 0.5
    max_latency_factor: float = 3.0
    """Unhealthy when the average latency passes this multiple of the latency target."""
    cooldown_s: float = 10.0
    """How long an unhealthy provider is avoided before it is tried again."""


@dataclass(frozen=True, slots=True)
class RoutingSection:
    providers: tuple[Provider, ...]
    strategy: Strategy
    header: str
    model_header: str | None
    low_budget_fraction: float
    """Below this share of a token budget left, the cheapest provider is chosen."""
    max_model_switches_per_minute: int
    """How often one principal may move to another provider by asking for another model."""
    health: HealthLimits


@dataclass(frozen=True, slots=True)
class RoutingRoute:
    enabled: bool = False
    strategy: Strategy | None = None
    """The route's own strategy (default: the section's)."""

    @property
    def active(self) -> bool:
        return self.enabled


# ---- schema ------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_HEADER = {"type": "string", "pattern": "^x-authz-[a-z0-9-]+$"}
"""Only ``x-authz-*``: Envoy strips client copies of those before ext_authz (envoy.yaml)."""
_PRICE = {"type": "number", "minimum": 0, "maximum": 1_000_000}
_TIERS = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"type": "string"}}
_SERVED = {
    "oneOf": [
        {"type": "null"},
        {"type": "string", "minLength": 1},
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {"serve_as": {"type": "string", "minLength": 1}, "tiers": _TIERS},
        },
    ]
}
_PROVIDER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "models"],
    "properties": {
        "name": _NAME,
        "route_value": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "cluster": _NAME,
        "models": {"type": "object", "minProperties": 1, "additionalProperties": _SERVED},
        "price": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"input_per_1k": _PRICE, "output_per_1k": _PRICE},
        },
        "tiers": _TIERS,
        "weight": {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000},
        "latency_target_ms": {"type": "number", "exclusiveMinimum": 0, "maximum": 600_000},
    },
}

SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["providers"],
    "properties": {
        "providers": {"type": "array", "minItems": 1, "items": _PROVIDER},
        "strategy": {"enum": list(STRATEGIES)},
        "header": _HEADER,
        "model_header": _HEADER,
        "low_budget_fraction": {"type": "number", "minimum": 0, "maximum": 1},
        "max_model_switches_per_minute": {"type": "integer", "minimum": 1, "maximum": 100_000},
        "health": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "ewma_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "min_samples": {"type": "integer", "minimum": 1, "maximum": 10_000},
                "max_error_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "max_latency_factor": {"type": "number", "minimum": 1, "maximum": 1000},
                "cooldown_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
            },
        },
    },
}
"""The top-level ``routing:`` section."""

ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"enabled": {"type": "boolean"}, "strategy": {"enum": list(STRATEGIES)}},
}
"""The ``routing:`` block of a route (and of ``defaults``); present means enabled."""


# ---- cross-checks (tolerate any shape) ----------------------------------------------------


def cross_check(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    section = data.get("routing")
    providers = section.get("providers") if isinstance(section, Mapping) else None
    names: set[str] = set()
    values: set[str] = set()
    clusters: set[str] = set()
    for index, provider in enumerate(providers if isinstance(providers, list) else []):
        if not isinstance(provider, Mapping):
            continue
        name = provider.get("name")
        value = provider.get("route_value", name)
        if isinstance(name, str):
            if name in names:
                yield ("routing", "providers", index, "name"), f"provider {name!r} is used twice"
            names.add(name)
        if isinstance(value, str):
            if value in values:
                yield (
                    ("routing", "providers", index, "route_value"),
                    f"route value {value!r} is used by two providers",
                )
            values.add(value)
        cluster = provider.get("cluster", name)
        if isinstance(cluster, str):
            if cluster in clusters:
                yield (
                    ("routing", "providers", index, "cluster"),
                    f"cluster {cluster!r} is used by two providers (Envoy's reports could not "
                    "tell them apart)",
                )
            clusters.add(cluster)
    fields = section if isinstance(section, Mapping) else {}
    model_header = fields.get("model_header")
    if model_header is not None and model_header == fields.get("header", "x-authz-provider"):
        yield ("routing", "model_header"), "must differ from routing.header"
    if section is None and _any_route_routed(data):
        yield ("routing",), "routes use routing, but no providers are declared (routing:)"


def _any_route_routed(data: Mapping[str, Any]) -> bool:
    routes = data.get("routes")
    return any(
        isinstance(route, Mapping) and isinstance(route.get("routing"), Mapping)
        for route in (routes if isinstance(routes, list) else [])
    )


# ---- building ----------------------------------------------------------------------------


def build_section(raw: Mapping[str, Any] | None) -> RoutingSection | None:
    if raw is None:
        return None
    return RoutingSection(
        providers=tuple(_provider(entry) for entry in raw["providers"]),
        strategy=raw.get("strategy", "cheapest_within_target"),
        header=raw.get("header", "x-authz-provider"),
        model_header=raw.get("model_header"),
        low_budget_fraction=raw.get("low_budget_fraction", 0.1),
        max_model_switches_per_minute=raw.get("max_model_switches_per_minute", 30),
        health=HealthLimits(**raw.get("health", {})),
    )


def _provider(raw: Mapping[str, Any]) -> Provider:
    price = raw.get("price", {})
    tiers = raw.get("tiers")
    return Provider(
        name=raw["name"],
        route_value=raw.get("route_value", raw["name"]),
        cluster=raw.get("cluster", raw["name"]),
        models={model: _served(model, entry) for model, entry in raw["models"].items()},
        input_per_1k=float(price.get("input_per_1k", 0.0)),
        output_per_1k=float(price.get("output_per_1k", 0.0)),
        tiers=frozenset(tiers) if tiers is not None else frozenset({ANY_TIER}),
        weight=float(raw.get("weight", 1.0)),
        latency_target_ms=float(raw.get("latency_target_ms", 5000.0)),
    )


def _served(model: str, entry: Any) -> ServedModel:
    if entry is None:
        return ServedModel(model)
    if isinstance(entry, str):
        return ServedModel(entry)
    tiers = entry.get("tiers")
    return ServedModel(entry.get("serve_as", model), frozenset(tiers) if tiers else None)


def build_route(raw: Mapping[str, Any] | None) -> RoutingRoute:
    if raw is None:
        return RoutingRoute()
    return RoutingRoute(enabled=raw.get("enabled", True), strategy=raw.get("strategy"))
