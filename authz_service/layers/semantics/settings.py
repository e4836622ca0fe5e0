"""The semantic layer's part of the policy: named Rego policies (top-level
``semantics:``) and the per-route ``semantics:`` block (rules, a Rego policy, prompt-
injection detection), with their schema fragments; everything compiled at load."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from authz_service.layers.semantics.injection import InjectionDetector
from authz_service.layers.semantics.injection.evaluate import DEFAULT_THRESHOLD
from authz_service.layers.semantics.rego import RegoCompileError, RegoPolicy
from authz_service.layers.semantics.rules import (
    OPERATORS,
    SUBJECT_PATTERN,
    Rule,
    RuleError,
    compile_rule,
)
from authz_service.layers.syntax.llm import ANY_TIER, LLM_APIS, LlmApi

KeyPath = tuple[str | int, ...]
InjectionAction = Literal["deny", "flag", "dry_run"]
DETECTORS = ("patterns", "classifier")


# ---- compiled settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InjectionAnswer:
    action: InjectionAction
    threshold: float


@dataclass(frozen=True, slots=True)
class InjectionCheck:
    detector: InjectionDetector
    api: str | None
    pointers: tuple[str, ...]
    roles: frozenset[str] | None
    default: InjectionAnswer
    by_tier: Mapping[str, InjectionAnswer]
    status: int = 403
    header: str = "x-authz-injection"

    def answer_for(self, tier: str | None) -> InjectionAnswer:
        return self.by_tier.get(tier, self.default) if tier is not None else self.default


@dataclass(frozen=True, slots=True)
class SemanticsRoute:
    rules: tuple[Rule, ...] = ()
    rego: RegoPolicy | None = None
    rego_name: str | None = None
    injection: InjectionCheck | None = None
    token_api: LlmApi | None = None
    """How to count the route's tokens for ``input.token_estimate``: the route's LLM API, set
    only when its Rego policy reads the estimate (counting costs ~50 µs per KB of prompt)."""

    @property
    def active(self) -> bool:
        return bool(self.rules) or self.rego is not None or self.injection is not None


# ---- schema ------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_FILES = {"type": "array", "items": {"type": "string", "minLength": 1}}
_STATUS = {"type": "integer", "minimum": 400, "maximum": 499}

_CONDITION_SCHEMA: dict[str, Any] = {
    "$id": "urn:authz-service:semantics:condition",
    "$ref": "#/$defs/condition",
    "$defs": {
        "condition": {
            "type": "object",
            "minProperties": 1,
            "properties": {
                "all": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/condition"}},
                "any": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/condition"}},
                "not": {"$ref": "#/$defs/condition"},
            },
            "patternProperties": {SUBJECT_PATTERN: {"$ref": "#/$defs/predicate"}},
            "additionalProperties": False,
        },
        "predicate": {
            "anyOf": [
                {"type": ["string", "number", "boolean", "null", "array"]},
                {
                    "type": "object",
                    "minProperties": 1,
                    "propertyNames": {"enum": list(OPERATORS)},
                },
            ]
        },
    },
}

_RULE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "oneOf": [{"required": ["when"]}, {"required": ["unless"]}],
    "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_-]{0,63}$"},
        "when": _CONDITION_SCHEMA,
        "unless": _CONDITION_SCHEMA,
        "status": _STATUS,
        "message": {"type": "string", "minLength": 1, "maxLength": 300},
        "mode": {"enum": ["enforce", "dry_run"]},
    },
}

_ANSWER = {
    "action": {"enum": ["deny", "flag", "dry_run"]},
    "threshold": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
}

SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rego": {
            "type": "object",
            "propertyNames": _NAME,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["modules"],
                "properties": {
                    "modules": {**_FILES, "minItems": 1},
                    "data": _FILES,
                    "query": {"type": "string", "pattern": r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$"},
                },
            },
        },
    },
}
"""The top-level ``semantics:`` section: Rego policies routes refer to by name."""

ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "rules": {"type": "array", "items": _RULE},
        "rego": _NAME,
        "injection": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "api": {"enum": list(LLM_APIS)},
                "pointers": {"type": "array", "items": {"type": "string", "pattern": "^/"}},
                "roles": {
                    "type": "array",
                    "minItems": 1,
                    "items": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                },
                "detectors": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": list(DETECTORS)},
                },
                **_ANSWER,
                "by_tier": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": _ANSWER,
                    },
                },
                "status": _STATUS,
                "header": {"type": "string", "pattern": "^x-[a-z0-9-]+$"},
            },
        },
    },
}
"""The ``semantics:`` block of a route (and of ``defaults``)."""


# ---- compiling (once per load; problems are reported, not raised) -------------------------


@dataclass
class SemanticsCatalog:
    rego: dict[str, RegoPolicy] = field(default_factory=dict)
    problems: list[tuple[KeyPath, str]] = field(default_factory=list)
    _detectors: dict[frozenset[str], InjectionDetector] = field(default_factory=dict)

    def detector(self, detectors: frozenset[str]) -> InjectionDetector:
        """One detector per combination, shared by every route that uses it."""
        if detectors not in self._detectors:
            self._detectors[detectors] = InjectionDetector(detectors)
        return self._detectors[detectors]


def compile_catalog(data: Mapping[str, Any], policy_dir: Path) -> SemanticsCatalog:
    """The compiled ``semantics:`` section (any shape tolerated: the schema check may have
    failed) and every problem met on the way, including the routes' rules."""
    catalog = SemanticsCatalog()
    for name, entry in _rego_entries(data):
        try:
            catalog.rego[name] = RegoPolicy.compile(
                [policy_dir / module for module in entry["modules"]],
                [policy_dir / file for file in entry.get("data", [])],
                entry.get("query", "data.authz.decision"),
            )
        except RegoCompileError as exc:
            for problem in exc.problems:
                where = f"{problem.file}:{problem.line}" if problem.line else problem.file
                catalog.problems.append(
                    (("semantics", "rego", name), f"{where}: {problem.message}")
                )
    catalog.problems.extend(_route_problems(data, catalog))
    return catalog


def _rego_entries(data: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    section = data.get("semantics")
    policies = section.get("rego") if isinstance(section, Mapping) else None
    if not isinstance(policies, Mapping):
        return
    for name, entry in policies.items():
        if isinstance(entry, Mapping) and isinstance(entry.get("modules"), list):
            yield name, entry


def _route_problems(
    data: Mapping[str, Any], catalog: SemanticsCatalog
) -> Iterator[tuple[KeyPath, str]]:
    section = data.get("semantics")
    declared = section.get("rego") if isinstance(section, Mapping) else None
    for path, block in _blocks(data):
        rego = block.get("rego")
        if isinstance(rego, str) and not (isinstance(declared, Mapping) and rego in declared):
            yield (*path, "rego"), f"no Rego policy is named {rego!r} (semantics.rego)"
        rules = block.get("rules")
        names: set[str] = set()
        for index, rule in enumerate(rules if isinstance(rules, list) else []):
            if not isinstance(rule, Mapping):
                continue
            name = rule.get("name")
            if isinstance(name, str):
                if name in names:
                    yield (*path, "rules", index, "name"), f"rule name {name!r} is used twice"
                names.add(name)
            try:
                compile_rule(rule)
            except (RuleError, KeyError, TypeError) as exc:
                yield (*path, "rules", index), str(exc)


def _blocks(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, Mapping[str, Any]]]:
    defaults = data.get("defaults")
    if isinstance(defaults, Mapping) and isinstance(defaults.get("semantics"), Mapping):
        yield ("defaults", "semantics"), defaults["semantics"]
    routes = data.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, Mapping) and isinstance(route.get("semantics"), Mapping):
            yield ("routes", index, "semantics"), route["semantics"]


# ---- building a route (from a file that passed every check) ------------------------------


def build_route(
    raw: Mapping[str, Any], catalog: SemanticsCatalog, llm_api: LlmApi | None
) -> SemanticsRoute:
    """``llm_api``: the syntax layer's API for the route, the default for injection."""
    rego_name = raw.get("rego")
    rego = catalog.rego[rego_name] if rego_name is not None else None
    return SemanticsRoute(
        rules=tuple(compile_rule(rule) for rule in raw.get("rules", ())),
        rego=rego,
        rego_name=rego_name,
        injection=_injection(raw["injection"], catalog, llm_api) if "injection" in raw else None,
        token_api=llm_api if rego is not None and rego.reads("token_estimate") else None,
    )


def _injection(
    raw: Mapping[str, Any], catalog: SemanticsCatalog, llm_api: str | None
) -> InjectionCheck:
    default = InjectionAnswer(raw.get("action", "deny"), raw.get("threshold", DEFAULT_THRESHOLD))
    roles = raw.get("roles")
    return InjectionCheck(
        detector=catalog.detector(frozenset(raw.get("detectors", DETECTORS))),
        api=raw.get("api", llm_api),
        pointers=tuple(raw.get("pointers", ())),
        roles=frozenset(roles) if roles is not None else None,
        default=default,
        by_tier={
            tier: InjectionAnswer(
                answer.get("action", default.action), answer.get("threshold", default.threshold)
            )
            for tier, answer in raw.get("by_tier", {}).items()
            if tier != ANY_TIER
        },
        status=raw.get("status", 403),
        header=raw.get("header", "x-authz-injection"),
    )
