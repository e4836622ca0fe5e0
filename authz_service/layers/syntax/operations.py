"""An OpenAPI document compiled for the request path: find the operation of a request,
check its parameters, and pick the body schema for its media type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jsonschema_rs

from authz_service.decision import Denial
from authz_service.layers.syntax.body_errors import MalformedBody
from authz_service.layers.syntax.form import FormLimits, parse_form
from authz_service.layers.syntax.openapi import (
    OpenApiDocument,
    Operation,
    Parameter,
    coerce_parameter,
    coerce_text,
)
from authz_service.layers.syntax.validation import (
    CompiledSchema,
    violations_denial,
)
from authz_service.media_type import ranges_matching
from authz_service.path_template import PathMatcher

_QUERY_LIMITS = FormLimits(max_fields=256, max_field_bytes=8192)


@dataclass(frozen=True, slots=True)
class BodyRule:
    schema: CompiledSchema | None
    property_types: Mapping[str, frozenset[str]]
    """Top-level property types, to turn form and multipart text into what the schema expects."""


class CompiledOperation:
    def __init__(self, operation: Operation, registry: jsonschema_rs.Registry) -> None:
        self.method = operation.method
        self.path = PathMatcher.compile("template", operation.template)
        self.label = operation.operation_id or f"{operation.method} {operation.template}"
        self.parameters = tuple(
            (p, CompiledSchema(f"{p.location} {p.name}", {"$ref": p.schema}, registry))
            for p in operation.parameters
        )
        self.query_names = frozenset(p.name for p in operation.parameters if p.location == "query")
        self._body_required = operation.body is not None and operation.body.required
        content = operation.body.content if operation.body is not None else {}
        field_types = operation.body.field_types if operation.body is not None else {}
        self._media = {
            media_range: BodyRule(
                CompiledSchema(f"{self.label} {media_range}", {"$ref": ref}, registry)
                if ref is not None
                else None,
                field_types.get(media_range, {}),
            )
            for media_range, ref in content.items()
        }

    def body_rule(self, media_type: str, has_body: bool) -> BodyRule | Denial:
        if not has_body:
            if self._body_required:
                return Denial(400, "syntax.body_required", f"{self.label} needs a request body")
            return BodyRule(None, {})
        if not self._media:
            return Denial(400, "syntax.body_forbidden", f"{self.label} takes no request body")
        for candidate in ranges_matching(media_type):
            if candidate in self._media:
                return self._media[candidate]
        accepted = ", ".join(self._media)
        return Denial(
            415,
            "syntax.unsupported_media_type",
            f"{self.label} does not take {media_type or 'a body without content type'}; "
            f"accepted: {accepted}",
            headers={"accept": accepted},
        )


@dataclass(frozen=True, slots=True)
class OperationMatch:
    operation: CompiledOperation
    path_params: Mapping[str, str]
    reject_unknown_query: bool

    def check_parameters(self, query: str, headers: Mapping[str, str], cap: int) -> Denial | None:
        try:
            query_values = parse_form(query.encode("utf-8"), _QUERY_LIMITS) if query else {}
        except MalformedBody as bad:
            return Denial(400, "syntax.invalid_query", f"query string: {bad.message}")
        operation = self.operation
        if self.reject_unknown_query:
            for name in query_values:
                if name not in operation.query_names:
                    known = ", ".join(sorted(operation.query_names)) or "none"
                    return Denial(
                        400,
                        "syntax.unknown_parameter",
                        f"query parameter {name[:64]!r} is not part of {operation.label} "
                        f"(known: {known})",
                    )
        for parameter, schema in operation.parameters:
            where = f"{parameter.location} parameter {parameter.name!r}"
            try:
                raw = self._raw_values(parameter, query_values, headers)
            except UnicodeDecodeError:
                return Denial(
                    400, "syntax.invalid_parameter", f"{where} is not UTF-8 once percent-decoded"
                )
            if raw is None:
                if parameter.required:
                    return Denial(400, "syntax.missing_parameter", f"{where} is required")
                continue
            try:
                value = coerce_parameter(raw, parameter)
            except ValueError as bad:
                return Denial(400, "syntax.invalid_parameter", f"{where}: {bad}")
            found = schema.violations(value, cap)
            if found is not None:
                violations, more = found
                return violations_denial(where, violations, more, "syntax.parameter_violation")
        return None

    def _raw_values(
        self,
        parameter: Parameter,
        query_values: Mapping[str, list[str]],
        headers: Mapping[str, str],
    ) -> list[str] | None:
        if parameter.location == "path":
            value = self.path_params.get(parameter.name)
            return None if value is None else [unquote(value, errors="strict")]
        if parameter.location == "query":
            return query_values.get(parameter.name)
        header = headers.get(parameter.name.lower())
        return None if header is None else [header]


class CompiledApi:
    """One OpenAPI document: its operations in document order, compiled once."""

    def __init__(self, name: str, document: OpenApiDocument, reject_unknown_query: bool) -> None:
        self.name = name
        registry = jsonschema_rs.Registry(list(document.resources.items()))
        self._operations = tuple(
            CompiledOperation(operation, registry) for operation in document.operations
        )
        self._reject_unknown_query = reject_unknown_query

    def match(self, method: str, path: str) -> OperationMatch | Denial:
        methods: set[str] = set()
        for operation in self._operations:
            params = operation.path.match(path)
            if params is None:
                continue
            if operation.method == method:
                return OperationMatch(operation, params, self._reject_unknown_query)
            methods.add(operation.method)
        if methods:
            allowed = ", ".join(sorted(methods))
            return Denial(
                405,
                "syntax.method_not_in_api",
                f"{method} is not an operation of {self.name!r} on this path; allowed: {allowed}",
                headers={"allow": allowed},
            )
        return Denial(
            404, "syntax.operation_not_found", f"no operation of {self.name!r} has this path"
        )


def coerce_fields(
    document: Mapping[str, Any], property_types: Mapping[str, frozenset[str]]
) -> dict[str, Any]:
    """Form or multipart text turned into the types the schema declares ("3" → 3)."""
    return {
        name: coerce_text(value, property_types[name])
        if isinstance(value, str) and name in property_types
        else value
        for name, value in document.items()
    }
