"""Load a policy file, validate it as a whole, and compile it for the request path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from authz_service.layers.cost import settings as cost_settings
from authz_service.layers.cost.settings import StoreSettings
from authz_service.layers.identity import settings as identity_settings
from authz_service.layers.protocol import settings as protocol_settings
from authz_service.layers.routing import settings as routing_settings
from authz_service.layers.semantics import settings as semantics_settings
from authz_service.layers.semantics.settings import SemanticsCatalog
from authz_service.layers.syntax import settings as syntax_settings
from authz_service.layers.syntax.settings import SyntaxCatalog
from authz_service.policy.errors import KeyPath, PolicyError, Problem
from authz_service.policy.model import KNOWN_METHODS, Policy, Route, Settings, Unmatched
from authz_service.policy.routes import HostMatcher, PathMatcher, RouteTable, TemplateError
from authz_service.policy.schema import POLICY_SCHEMA
from authz_service.policy.yaml_source import YamlDocument

_VALIDATOR = Draft202012Validator(POLICY_SCHEMA)


def load_policy(file: str | Path) -> Policy:
    """The compiled policy, or :class:`PolicyError` listing every problem in the file."""
    document = YamlDocument(Path(file))
    problems = list(document.problems)
    catalogs = _Catalogs(SyntaxCatalog(), SemanticsCatalog())
    if not problems:
        problems.extend(_schema_problems(document))
        problems.extend(_cross_check_problems(document))
        problems.extend(_layer_problems(document))
        data = document.data if isinstance(document.data, dict) else {}
        policy_dir = Path(document.file).parent
        catalogs = _Catalogs(
            syntax_settings.compile_catalog(data, policy_dir),
            semantics_settings.compile_catalog(data, policy_dir),
        )
        problems.extend(_located(document, catalogs.syntax.problems))
        problems.extend(_located(document, catalogs.semantics.problems))
    if problems:
        raise PolicyError(sorted(problems, key=lambda problem: problem.line or 0))
    return _compile(document, catalogs)


@dataclass(frozen=True, slots=True)
class _Catalogs:
    """What the layers compiled while the file was checked, reused to build the routes."""

    syntax: SyntaxCatalog
    semantics: SemanticsCatalog


def _schema_problems(document: YamlDocument) -> Iterator[Problem]:
    errors = sorted(_VALIDATOR.iter_errors(document.data), key=lambda e: list(map(str, e.path)))
    for error in errors:
        for path, message in _describe(error):
            yield Problem(document.file, path, message, document.line_of(path))


def _describe(error: ValidationError) -> Iterator[tuple[KeyPath, str]]:
    """Messages that name the key at fault, one per unknown key."""
    path: KeyPath = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        allowed = schema.get("properties", {})
        known = ", ".join(sorted(allowed))
        for key in sorted(str(key) for key in error.instance if key not in allowed):
            yield (*path, key), f"unknown key {key!r} (known keys: {known})"
    elif error.validator in ("minProperties", "maxProperties") and schema.get("properties"):
        yield path, "needs exactly one of: " + " or ".join(schema["properties"])
    else:
        yield path, error.message


def _cross_check_problems(document: YamlDocument) -> Iterator[Problem]:
    """What a schema cannot say: unique names, compilable templates, existing references.

    Runs even when the schema found problems, so tolerates any shape."""
    data = document.data if isinstance(document.data, dict) else {}
    routes = data.get("routes")
    if not isinstance(routes, list):
        routes = []
    names: set[str] = set()
    for index, entry in enumerate(routes):
        if not isinstance(entry, dict):
            continue
        name = entry.get("name")
        if isinstance(name, str):
            if name in names:
                path: KeyPath = ("routes", index, "name")
                yield Problem(
                    document.file,
                    path,
                    f"route name {name!r} is used twice",
                    document.line_of(path),
                )
            names.add(name)
        match = entry.get("match")
        template = match.get("path", {}) if isinstance(match, dict) else {}
        if isinstance(template, dict) and isinstance(template.get("template"), str):
            try:
                PathMatcher.compile("template", template["template"])
            except TemplateError as exc:
                path = ("routes", index, "match", "path", "template")
                yield Problem(document.file, path, str(exc), document.line_of(path))
    unmatched = data.get("unmatched")
    target = unmatched.get("route") if isinstance(unmatched, dict) else None
    if isinstance(target, str) and target not in names:
        path = ("unmatched", "route")
        yield Problem(document.file, path, f"no route is named {target!r}", document.line_of(path))


def _layer_problems(document: YamlDocument) -> Iterator[Problem]:
    """Each layer's own cross-checks (secrets present, files exist, references resolve)."""
    data = document.data if isinstance(document.data, dict) else {}
    yield from _located(document, identity_settings.cross_check(data, Path(document.file).parent))
    yield from _located(document, cost_settings.cross_check(data))
    yield from _located(document, _store_timeout_problems(data))
    yield from _located(document, routing_settings.cross_check(data))


def _store_timeout_problems(data: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    """The quota store's timeout must end before the decision's deadline, or its failures
    would end as deadline timeouts instead of the policy's ``on_failure``."""
    cost, settings = data.get("cost"), data.get("settings", {})
    if not isinstance(cost, Mapping) or not isinstance(settings, Mapping):
        return
    store = cost.get("store", {})
    timeout = (
        store.get("timeout_ms", StoreSettings().timeout_ms) if isinstance(store, Mapping) else None
    )
    deadline = settings.get("decision_timeout_ms", Settings().decision_timeout_ms)
    if isinstance(timeout, int) and isinstance(deadline, int) and timeout >= deadline:
        yield (
            ("cost", "store", "timeout_ms"),
            f"must be shorter than settings.decision_timeout_ms ({deadline}), or the store's "
            "failures would end as deadline timeouts instead of the configured on_failure",
        )


def _located(document: YamlDocument, found: Iterable[tuple[KeyPath, str]]) -> Iterator[Problem]:
    for path, message in found:
        yield Problem(document.file, path, message, document.line_of(path))


def _compile(document: YamlDocument, catalogs: _Catalogs) -> Policy:
    """The request-time form of a file that passed every check."""
    raw: dict[str, Any] = document.data
    layer_defaults = raw.get("defaults", {})
    cost = cost_settings.build_section(raw.get("cost"))
    routes = []
    for entry in raw["routes"]:
        ((kind, pattern),) = entry["match"]["path"].items()
        blocks = {
            layer: {**layer_defaults.get(layer, {}), **entry.get(layer, {})}
            for layer in ("protocol", "identity", "syntax", "semantics")
        }
        syntax = syntax_settings.build_route(blocks["syntax"], catalogs.syntax)
        llm_api = syntax.llm.api if syntax.llm is not None else None
        routes.append(
            Route(
                name=entry["name"],
                hosts=HostMatcher.compile(entry["match"].get("hosts", [])),
                path=PathMatcher.compile(kind, pattern),
                methods=frozenset(entry["match"].get("methods", KNOWN_METHODS)),
                protocol=protocol_settings.build(blocks["protocol"]),
                identity=identity_settings.build_route(blocks["identity"]),
                syntax=syntax,
                semantics=semantics_settings.build_route(
                    blocks["semantics"], catalogs.semantics, llm_api
                ),
                cost=cost_settings.build_route(
                    _optional_block("cost", layer_defaults, entry), cost, llm_api
                ),
                routing=routing_settings.build_route(
                    _optional_block("routing", layer_defaults, entry)
                ),
            )
        )
    return Policy(
        source=document.file,
        routes=tuple(routes),
        unmatched=Unmatched(**raw.get("unmatched", {})),
        settings=Settings(**raw.get("settings", {})),
        identity=identity_settings.build_section(raw.get("identity"), Path(document.file).parent),
        cost=cost,
        routing=routing_settings.build_section(raw.get("routing")),
    )


def _optional_block(
    layer: str, defaults: Mapping[str, Any], route: Mapping[str, Any]
) -> dict[str, Any] | None:
    """Layers that act only where asked: the route's block over ``defaults``, or ``None``
    when neither has one (a route is charged or routed only if it says so)."""
    if layer not in defaults and layer not in route:
        return None
    return {**defaults.get(layer, {}), **route.get(layer, {})}


def route_table(policy: Policy) -> RouteTable:
    """The request-path lookup structure for ``policy``."""
    by_name = {route.name: route for route in policy.routes}
    fallback = by_name[policy.unmatched.route] if policy.unmatched.route else None
    return RouteTable(policy.routes, fallback)
