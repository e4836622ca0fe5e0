"""Declarative rules: conditions on the principal, the route, headers and body fields,
compiled once into predicates; the first rule that denies decides.

A rule denies ``when`` its condition holds, or ``unless`` it holds. A condition is a
mapping of subjects to predicates (all must hold), or ``all`` / ``any`` / ``not`` of
conditions. Subjects: ``principal.<field>``, ``route``, ``method``, ``path``,
``header.<name>``, ``query.<name>``, ``path_param.<name>``, ``body`` and
``body/<json pointer>``. A predicate is a value (equality) or operators: ``equals``,
``not_equals``, ``in``, ``not_in``, ``gt``, ``gte``, ``lt``, ``lte``, ``present``,
``matches`` (a regex), ``contains``, ``contains_any``, ``size_gt``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

from authz_service import json_pointer
from authz_service.layers.base import NO_JSON_BODY, Context

RuleMode = Literal["enforce", "dry_run"]

_MISSING = json_pointer.MISSING
"""A subject that is absent (no such header, field, principal)."""

Getter = Callable[[Context], Any]
Predicate = Callable[[Any], bool]
Condition = Callable[[Context], bool]

PRINCIPAL_FIELDS = ("subject", "tenant", "tier", "roles", "scopes", "method", "provider")
OPERATORS = (
    "equals",
    "not_equals",
    "in",
    "not_in",
    "gt",
    "gte",
    "lt",
    "lte",
    "present",
    "matches",
    "contains",
    "contains_any",
    "size_gt",
)
SUBJECT_PATTERN = (
    r"^(route|method|path|body(/.*)?|principal\.(" + "|".join(PRINCIPAL_FIELDS) + r")"
    r"|header\.[a-z0-9-]+|query\.[^.]+|path_param\.[A-Za-z0-9_.~-]+)$"
)
"""What a condition may look at (the policy schema enforces it)."""
_COMBINATORS = ("all", "any", "not")


class RuleError(ValueError):
    """A rule that cannot be compiled (a bad regex, an operator on the wrong type)."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    condition: Condition
    deny_when: bool
    """``True``: deny when the condition holds (``when``); ``False``: unless it holds."""
    status: int
    message: str
    mode: RuleMode

    def denies(self, ctx: Context) -> bool:
        return self.condition(ctx) is self.deny_when


def compile_rule(raw: Mapping[str, Any]) -> Rule:
    """A rule from its (schema-valid) policy entry; :class:`RuleError` names what is wrong."""
    deny_when = "when" in raw
    return Rule(
        name=raw["name"],
        condition=compile_condition(raw["when"] if deny_when else raw["unless"]),
        deny_when=deny_when,
        status=raw.get("status", 403),
        message=raw.get("message", f"denied by rule {raw['name']!r}"),
        mode=raw.get("mode", "enforce"),
    )


def compile_condition(raw: Mapping[str, Any]) -> Condition:
    parts: list[Condition] = []
    for key, value in raw.items():
        if key == "all":
            parts.append(_all([compile_condition(item) for item in value]))
        elif key == "any":
            parts.append(_any([compile_condition(item) for item in value]))
        elif key == "not":
            parts.append(_not(compile_condition(value)))
        else:
            parts.append(_subject_test(_getter(key), _predicate(key, value)))
    return parts[0] if len(parts) == 1 else _all(parts)


def _all(conditions: Sequence[Condition]) -> Condition:
    return lambda ctx: all(condition(ctx) for condition in conditions)


def _any(conditions: Sequence[Condition]) -> Condition:
    return lambda ctx: any(condition(ctx) for condition in conditions)


def _not(condition: Condition) -> Condition:
    return lambda ctx: not condition(ctx)


def _subject_test(getter: Getter, predicate: Predicate) -> Condition:
    return lambda ctx: predicate(getter(ctx))


# ---- subjects ----------------------------------------------------------------------------


def _getter(subject: str) -> Getter:
    if subject == "route":
        return lambda ctx: ctx.route.name if ctx.route is not None else _MISSING
    if subject == "method":
        return lambda ctx: ctx.view.method
    if subject == "path":
        return lambda ctx: ctx.view.path
    if subject == "body":
        return _body_value("")
    kind, _, name = subject.partition(".")
    if subject.startswith("body/"):
        return _body_value(subject[len("body") :])
    if kind == "principal":
        return _principal_field(name)
    if kind == "header":
        return lambda ctx: ctx.view.headers.get(name, _MISSING)
    if kind == "query":
        return lambda ctx: _query_value(ctx, name)
    if kind == "path_param":
        return lambda ctx: ctx.path_params.get(name, _MISSING)
    raise RuleError(f"unknown subject {subject!r}")


def _body_value(pointer: str) -> Getter:
    def get(ctx: Context) -> Any:
        document = ctx.fields
        return _MISSING if document is NO_JSON_BODY else json_pointer.resolve(document, pointer)

    return get


def _principal_field(name: str) -> Getter:
    def get(ctx: Context) -> Any:
        principal = ctx.principal
        if principal is None:
            return _MISSING
        if name == "method":
            return principal.method
        value = getattr(principal, name)
        return sorted(value) if isinstance(value, frozenset) else value

    return get


def _query_value(ctx: Context, name: str) -> Any:
    values = parse_qs(ctx.view.query, keep_blank_values=True).get(name)
    if not values:
        return _MISSING
    return values[0] if len(values) == 1 else values


# ---- predicates --------------------------------------------------------------------------


def _predicate(subject: str, raw: Any) -> Predicate:
    if not isinstance(raw, Mapping):
        return _operator(subject, "equals", raw)
    tests = [_operator(subject, operator, operand) for operator, operand in raw.items()]
    return tests[0] if len(tests) == 1 else (lambda value: all(test(value) for test in tests))


def _operator(subject: str, operator: str, operand: Any) -> Predicate:
    if operator == "present":
        return lambda value: (value is not _MISSING) is bool(operand)
    if operator == "equals":
        return lambda value: value is not _MISSING and _same(value, operand)
    if operator == "not_equals":
        return lambda value: value is _MISSING or not _same(value, operand)
    if operator in ("in", "not_in"):
        if not isinstance(operand, list):
            raise RuleError(f"{subject}: {operator} takes a list")
        members = list(operand)

        def inside(value: Any) -> bool:
            return value is not _MISSING and any(_same(value, member) for member in members)

        return inside if operator == "in" else (lambda value: not inside(value))
    if operator in ("gt", "gte", "lt", "lte"):
        if not _is_number(operand):
            raise RuleError(f"{subject}: {operator} takes a number")
        compare = _COMPARISONS[operator]
        return lambda value: _is_number(value) and compare(value, operand)
    if operator == "size_gt":
        if not isinstance(operand, int) or isinstance(operand, bool):
            raise RuleError(f"{subject}: size_gt takes an integer")
        return lambda value: isinstance(value, str | list | dict) and len(value) > operand
    if operator == "matches":
        try:
            pattern = re.compile(str(operand))
        except re.error as exc:
            raise RuleError(f"{subject}: matches: not a valid regex: {exc}") from None
        return lambda value: isinstance(value, str) and pattern.search(value) is not None
    if operator == "contains":
        return lambda value: isinstance(value, list) and any(_same(item, operand) for item in value)
    if operator == "contains_any":
        if not isinstance(operand, list):
            raise RuleError(f"{subject}: contains_any takes a list")
        wanted = list(operand)
        return lambda value: (
            isinstance(value, list)
            and any(_same(item, member) for item in value for member in wanted)
        )
    raise RuleError(f"{subject}: unknown operator {operator!r}")


def _same(value: Any, other: Any) -> bool:
    """JSON equality: ``1 == 1.0`` but ``True != 1``."""
    if isinstance(value, bool) or isinstance(other, bool):
        return type(value) is type(other) and value == other
    return bool(value == other)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}
