"""The cost layer's part of the policy: named limits, model token rules and the quota store
(top-level ``cost:``), and the per-route ``cost:`` block naming which limits apply.

A limit counts ``tokens``, ``requests`` or ``in_flight`` requests per scope (``per``: user,
tenant, api_key, model, route, ip; none = global) over a window, with an amount per tier
and overrides per scope value. Everything is checked and compiled here, at load."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args
from urllib.parse import quote

from authz_service.layers.cost.store.base import ChargeKind, Window
from authz_service.layers.syntax.llm import ANY_TIER, LlmApi

KeyPath = tuple[str | int, ...]
Dimension = Literal["user", "tenant", "api_key", "model", "route", "ip"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
TokenizerName = Literal["o200k_base", "cl100k_base", "estimate"]
OnFailure = Literal["deny", "fallback"]
"""Quota store unreachable: deny (503, fail closed) or admit against a local limit."""
Partition = Literal["global", "tenant"]

PRINCIPAL_DIMENSIONS = frozenset({"user", "tenant", "api_key"})
"""Scopes that belong to one tenant: a limit using one of them can live in a tenant's slot."""


# ---- compiled settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LimitSpec:
    name: str
    per: tuple[Dimension, ...]
    kind: ChargeKind
    window: Window
    window_label: str
    """As the policy wrote it (``day``, ``rolling 1h``): for headers and denials."""
    amounts: Mapping[str, int]
    """Amount per tier; ``*`` for any other tier. A tier with neither is not limited."""
    overrides: Mapping[str, int] = field(default_factory=dict)
    """Amount per scope (``user=alice``, ``tenant=acme,user=bob``), before the tier's."""

    def amount_for(self, tier: str, scope: str) -> int | None:
        override = self.overrides.get(scope)
        if override is not None:
            return override
        return self.amounts.get(tier, self.amounts.get(ANY_TIER))


@dataclass(frozen=True, slots=True)
class ModelCost:
    tokenizer: TokenizerName = "estimate"
    default_output_tokens: int = 1024
    """Reserved for output when the request names no ``max_tokens``."""
    max_output_tokens: int = 16384
    """The most a request can reserve for output (what the model can produce)."""


@dataclass(frozen=True, slots=True)
class StoreSettings:
    timeout_ms: int = 50
    on_failure: OnFailure = "deny"
    fallback_scale: float = 0.1
    """With ``on_failure: fallback``, each replica admits this share of every limit on its
    own while the store is down (e.g. 0.1 with 10 replicas keeps the total)."""
    breaker_failures: int = 3
    """Consecutive store failures that open the circuit breaker."""
    breaker_open_s: float = 2.0
    """How long an open breaker skips the store before one request probes it again."""
    partition: Partition = "global"
    """Which counters share a Redis Cluster slot (one decision's counters must): all of
    them, or each tenant's (then every limit must be scoped by user, tenant or API key)."""


@dataclass(frozen=True, slots=True)
class CostSection:
    limits: Mapping[str, LimitSpec]
    models: Mapping[str, ModelCost]
    default_model: ModelCost
    store: StoreSettings

    @property
    def partition_by_tenant(self) -> bool:
        return self.store.partition == "tenant"

    def model(self, name: object) -> ModelCost:
        """The token rules of the requested model (any JSON value), else the defaults."""
        if isinstance(name, str):
            return self.models.get(name, self.default_model)
        return self.default_model


@dataclass(frozen=True, slots=True)
class CostRoute:
    limits: tuple[LimitSpec, ...] = ()
    api: LlmApi | None = None
    """The route's ``syntax.llm.api``: how to read the (validated) body for a token estimate;
    ``None``: the route counts no tokens."""
    status: int = 429

    @property
    def active(self) -> bool:
        return bool(self.limits)


# ---- schema ------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 10**15}
_AMOUNT = {
    "oneOf": [
        _COUNT,
        {"type": "object", "minProperties": 1, "additionalProperties": _COUNT},
    ]
}
_WINDOW_PATTERN = r"^(second|minute|hour|day|month|(rolling )?[1-9][0-9]{0,6}(s|m|h|d))$"
_MODEL = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "tokenizer": {"enum": list(get_args(TokenizerName))},
        "default_output_tokens": {"type": "integer", "minimum": 0, "maximum": 10**7},
        "max_output_tokens": {"type": "integer", "minimum": 1, "maximum": 10**7},
    },
}


def _other_kinds_or(kind: str, forbidden: str) -> list[dict[str, Any]]:
    """Schema alternatives: another kind than ``kind``, or the ``forbidden`` key."""
    others = [other for other in ("tokens", "requests", "in_flight") if other != kind]
    return [{"required": [key]} for key in (*others, forbidden)]


_LIMIT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "minProperties": 2,
    "oneOf": [
        {"required": ["tokens"], "not": {"anyOf": _other_kinds_or("tokens", "lease_s")}},
        {"required": ["requests"], "not": {"anyOf": _other_kinds_or("requests", "lease_s")}},
        {"required": ["in_flight"], "not": {"anyOf": _other_kinds_or("in_flight", "window")}},
    ],
    "properties": {
        "name": _NAME,
        "per": {"type": "array", "uniqueItems": True, "items": {"enum": list(DIMENSIONS)}},
        "window": {"type": "string", "pattern": _WINDOW_PATTERN},
        "tokens": _AMOUNT,
        "requests": _AMOUNT,
        "in_flight": _AMOUNT,
        "lease_s": {"type": "integer", "minimum": 1, "maximum": 3600},
        "overrides": {"type": "object", "additionalProperties": _COUNT},
    },
}

SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limits": {"type": "array", "items": _LIMIT},
        "models": {"type": "object", "additionalProperties": _MODEL},
        "default_model": _MODEL,
        "store": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "timeout_ms": {"type": "integer", "minimum": 1, "maximum": 10_000},
                "on_failure": {"enum": list(get_args(OnFailure))},
                "fallback_scale": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "breaker_failures": {"type": "integer", "minimum": 1, "maximum": 1000},
                "breaker_open_s": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600},
                "partition": {"enum": list(get_args(Partition))},
            },
        },
    },
}
"""The top-level ``cost:`` section."""

ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limits": {"type": "array", "uniqueItems": True, "items": _NAME},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
    },
}
"""The ``cost:`` block of a route (and of ``defaults``): which limits (default: all of them)
and the status of a refusal. Tokens are estimated from the body the syntax layer validated
against its ``llm.api`` schema."""

_KINDS: tuple[ChargeKind, ...] = get_args(ChargeKind)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_NAMED_WINDOWS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_SCOPE = re.compile(r"^[a-z_]+=[^,]*(,[a-z_]+=[^,]*)*$")


def scope_text(parts: Sequence[tuple[str, str]]) -> str:
    """``dim=value,...`` with values escaped: no ``,``, ``=`` or ``:`` survives, so a scope
    can neither fake another dimension nor end a counter key like another key's suffix."""
    return ",".join(f"{dimension}={quote(value, safe='@._-')}" for dimension, value in parts)


def _scope_parts(scope: str) -> list[tuple[str, str]]:
    """``user=alice,model=x`` as written in an override -> its (dimension, value) pairs."""
    parts = []
    for part in scope.split(","):
        dimension, _, value = part.partition("=")
        parts.append((dimension, value))
    return parts


def parse_window(text: str) -> Window:
    """``day`` → fixed 86400 s, ``month`` → the UTC calendar month, ``rolling 1h`` → the
    last hour, ``90s`` → fixed 90 s windows aligned on the epoch."""
    if text == "month":
        return Window("calendar_month")
    if text in _NAMED_WINDOWS:
        return Window("fixed", _NAMED_WINDOWS[text])
    rolling = text.startswith("rolling ")
    length = text.removeprefix("rolling ")
    seconds = int(length[:-1]) * _UNIT_SECONDS[length[-1]]
    return Window("rolling" if rolling else "fixed", seconds)


# ---- cross-checks (the file's shape may be wrong: tolerate anything) ----------------------


def cross_check(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    """Unique limit names, existing references, token limits only where tokens can be
    estimated, overrides naming the limit's own scope, sane model settings."""
    section = _mapping(data.get("cost"))
    limits = _list(section.get("limits"))
    declared: dict[str, Mapping[str, Any]] = {}
    for index, limit in enumerate(limits):
        if not isinstance(limit, Mapping) or not isinstance(limit.get("name"), str):
            continue
        if limit["name"] in declared:
            yield ("cost", "limits", index, "name"), f"limit name {limit['name']!r} is used twice"
        declared[limit["name"]] = limit
        yield from _override_problems(("cost", "limits", index), limit)
        per = limit.get("per", [])
        by_tenant = _mapping(section.get("store")).get("partition") == "tenant"
        if by_tenant and isinstance(per, list) and not PRINCIPAL_DIMENSIONS & set(per):
            yield (
                ("cost", "limits", index, "per"),
                "with store.partition: tenant, every limit needs user, tenant or api_key in "
                "`per` (a counter shared across tenants cannot live in one tenant's slot)",
            )
    models = _mapping(section.get("models"))
    for name, model in [*models.items(), ("", section.get("default_model"))]:
        model = _mapping(model)
        default, cap = model.get("default_output_tokens", 0), model.get("max_output_tokens")
        if isinstance(default, int) and isinstance(cap, int) and default > cap:
            path: KeyPath = ("cost", "models", name) if name else ("cost", "default_model")
            yield path, "default_output_tokens is larger than max_output_tokens"
    for path, block, llm_api in _blocks(data):
        named = block.get("limits")
        chosen = named if isinstance(named, list) else list(declared)
        for index, name in enumerate(chosen):
            if isinstance(named, list) and name not in declared:
                yield (*path, "limits", index), f"no limit is named {name!r} (cost.limits)"
                continue
            counts_tokens = "tokens" in declared.get(name, {})
            if counts_tokens and llm_api is None and path[0] == "routes":
                yield (
                    path,
                    f"limit {name!r} counts tokens, but the route names no LLM api to estimate "
                    "them from (set syntax.llm.api: the estimate reads the body it validated)",
                )


def _override_problems(path: KeyPath, limit: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    overrides = limit.get("overrides")
    per = limit.get("per", [])
    if not isinstance(overrides, Mapping) or not isinstance(per, list):
        return
    for scope in overrides:
        dimensions = [part.split("=", 1)[0] for part in scope.split(",")]
        if not _SCOPE.match(scope) or dimensions != per:
            expected = ",".join(f"{name}=..." for name in per) or "(a global limit has none)"
            yield (*path, "overrides", scope), f"override {scope!r} must look like {expected}"


def _blocks(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, Mapping[str, Any], str | None]]:
    """Each route's effective ``cost:`` block (defaults merged) with its syntax LLM api."""
    defaults = _mapping(data.get("defaults"))
    has_default = isinstance(defaults.get("cost"), Mapping)
    default_block = _mapping(defaults.get("cost"))
    if has_default:
        yield ("defaults", "cost"), default_block, None
    for index, route in enumerate(_list(data.get("routes"))):
        route = _mapping(route)
        if not has_default and not isinstance(route.get("cost"), Mapping):
            continue
        api = _mapping(_mapping(route.get("syntax")).get("llm")).get("api")
        block = {**default_block, **_mapping(route.get("cost"))}
        yield ("routes", index, "cost"), block, api if isinstance(api, str) else None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


# ---- building (from a file that passed every check) --------------------------------------


def build_section(raw: Mapping[str, Any] | None) -> CostSection | None:
    if raw is None:
        return None
    limits = {entry["name"]: _limit(entry) for entry in raw.get("limits", ())}
    return CostSection(
        limits=limits,
        models={name: ModelCost(**entry) for name, entry in raw.get("models", {}).items()},
        default_model=ModelCost(**raw.get("default_model", {})),
        store=StoreSettings(**raw.get("store", {})),
    )


def _limit(raw: Mapping[str, Any]) -> LimitSpec:
    kind = next(kind for kind in _KINDS if kind in raw)
    amounts = raw[kind] if isinstance(raw[kind], Mapping) else {ANY_TIER: raw[kind]}
    if kind == "in_flight":
        window, label = Window("rolling", raw.get("lease_s", 300)), "in_flight"
    else:
        label = raw.get("window", "minute")
        window = parse_window(label)
    return LimitSpec(
        name=raw["name"],
        per=tuple(raw.get("per", ())),
        kind=kind,
        window=window,
        window_label=label,
        amounts=dict(amounts),
        overrides={
            scope_text(_scope_parts(scope)): amount
            for scope, amount in raw.get("overrides", {}).items()
        },
    )


def build_route(
    raw: Mapping[str, Any] | None, section: CostSection | None, llm_api: LlmApi | None
) -> CostRoute:
    """``raw``: the route's ``cost:`` block merged over ``defaults``; ``None``: not charged."""
    if raw is None or section is None:
        return CostRoute()
    names = raw.get("limits", list(section.limits))
    return CostRoute(
        limits=tuple(section.limits[name] for name in names),
        api=llm_api,
        status=raw.get("status", 429),
    )
