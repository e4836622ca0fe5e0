"""The syntax layer's part of the policy: named schemas and OpenAPI documents (top-level
``syntax:``) and the per-route ``syntax:`` block, with their schema fragments.

Everything is compiled here, at load: a schema that does not compile, a ``$ref`` that
does not resolve or an OpenAPI document with problems is a policy problem with its
location, never a surprise on the request path.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema_rs

from authz_service.layers.syntax.form import FormLimits
from authz_service.layers.syntax.images import FORMATS, ImageLimits
from authz_service.layers.syntax.llm import ANY_TIER, LLM_APIS, LlmApi, LlmLimits, LlmPolicy
from authz_service.layers.syntax.multipart import MultipartLimits
from authz_service.layers.syntax.openapi import OpenApiError, load_openapi
from authz_service.layers.syntax.operations import CompiledApi
from authz_service.layers.syntax.schema_files import SchemaFileError, collect_resources, file_uri
from authz_service.layers.syntax.validation import BUILTIN_SCHEMAS, CompiledSchema, builtin_schema

KeyPath = tuple[str | int, ...]


# ---- compiled settings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartRule:
    required: bool = False
    content_types: tuple[str, ...] = ()
    """Media ranges the part may declare (and, for images, must sniff as); empty: any."""


@dataclass(frozen=True, slots=True)
class MultipartSettings:
    limits: MultipartLimits = field(default_factory=MultipartLimits)
    fields: Mapping[str, PartRule] | None = None
    """The only fields accepted, when set."""


@dataclass(frozen=True, slots=True)
class ImageCheck:
    limits: ImageLimits
    json_pointer: str | None = None
    """Where a base64 image sits in a JSON body."""
    allow_data_url: bool = False
    """Whether that field may be a ``data:image/…;base64,`` URL (only if the upstream
    reads them: a plain-base64 upstream would fail on the prefix)."""
    multipart_field: str | None = None
    """The multipart part that carries the image."""


@dataclass(frozen=True, slots=True)
class SyntaxRoute:
    schema: CompiledSchema | None = None
    """The body's schema: a named one, a built-in, or the LLM API's."""
    extra_schema: CompiledSchema | None = None
    """A named schema on top of the LLM API's built-in one."""
    openapi: CompiledApi | None = None
    llm: LlmPolicy | None = None
    form: FormLimits = field(default_factory=FormLimits)
    multipart: MultipartSettings = field(default_factory=MultipartSettings)
    image: ImageCheck | None = None
    max_violations: int = 10
    parse_fields: bool = False
    """The block sets ``form`` or ``multipart`` limits: such bodies are parsed within them
    (a malformed one refused) and their fields offered to policies, even with no schema."""

    @property
    def active(self) -> bool:
        return (
            self.schema is not None
            or self.openapi is not None
            or self.image is not None
            or self.multipart.fields is not None
            or self.parse_fields
        )


# ---- schema ------------------------------------------------------------------------------

_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}
_FILE = {"type": "string", "minLength": 1}
_MEDIA_RANGE = {"type": "string", "pattern": r"^([a-z0-9!#$&^_.+-]+|\*)/([a-z0-9!#$&^_.+-]+|\*)$"}
_POSITIVE = {"type": "integer", "minimum": 1}

_NAMED_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
    "properties": {"file": _FILE, "inline": {"type": ["object", "boolean"]}},
}

SECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "schemas": {
            "type": "object",
            "propertyNames": _NAME,
            "additionalProperties": _NAMED_SCHEMA,
        },
        "openapi": {
            "type": "object",
            "propertyNames": _NAME,
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["file"],
                "properties": {
                    "file": _FILE,
                    "base_path": {"type": "string", "pattern": "^(/.*)?$"},
                    "reject_unknown_query": {"type": "boolean"},
                },
            },
        },
    },
}
"""The top-level ``syntax:`` section: schemas and OpenAPI documents routes refer to."""

_LLM_LIMITS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max_messages": _POSITIVE,
        "max_message_chars": _POSITIVE,
        "max_total_chars": _POSITIVE,
        "max_output_tokens": _POSITIVE,
        "allowed_parameters": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
    },
}

ROUTE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "json_schema": {"type": "string", "minLength": 1},
        "openapi": _NAME,
        "max_violations": {"type": "integer", "minimum": 1, "maximum": 100},
        "form": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"max_fields": _POSITIVE, "max_field_bytes": _POSITIVE},
        },
        "multipart": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_parts": _POSITIVE,
                "max_part_bytes": _POSITIVE,
                "max_part_header_bytes": _POSITIVE,
                "allow_duplicate_fields": {"type": "boolean"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "required": {"type": "boolean"},
                            "content_types": {"type": "array", "items": _MEDIA_RANGE},
                        },
                    },
                },
            },
        },
        "image": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "json_pointer": {"type": "string", "pattern": "^(/.*)?$"},
                "allow_data_url": {"type": "boolean"},
                "multipart_field": {"type": "string", "minLength": 1},
                "formats": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": list(FORMATS)},
                },
                "max_width": _POSITIVE,
                "max_height": _POSITIVE,
                "max_pixels": _POSITIVE,
                "max_frames": _POSITIVE,
            },
        },
        "llm": {
            "type": "object",
            "additionalProperties": False,
            "required": ["api"],
            "properties": {
                "api": {"enum": list(LLM_APIS)},
                "limits": {"type": "object", "additionalProperties": _LLM_LIMITS},
            },
        },
    },
}
"""The ``syntax:`` block of a route (and of ``defaults``)."""


# ---- compiling the section (once per load; problems are reported, not raised) ------------

_UNUSABLE_SCHEMA = (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError)
"""What jsonschema-rs raises for a schema that does not compile or a ``$ref`` that does not
resolve (``TemplateError``, a bad OpenAPI path template, is a ``ValueError`` too)."""


@dataclass
class SyntaxCatalog:
    """Everything routes may refer to, compiled, and what went wrong compiling it."""

    schemas: dict[str, CompiledSchema] = field(default_factory=dict)
    apis: dict[str, CompiledApi] = field(default_factory=dict)
    problems: list[tuple[KeyPath, str]] = field(default_factory=list)
    _builtins: dict[str, CompiledSchema] = field(default_factory=dict)

    def schema(self, name: str) -> CompiledSchema | None:
        """A named schema of the policy, or a built-in one (compiled on first use)."""
        if name in self.schemas:
            return self.schemas[name]
        if name not in BUILTIN_SCHEMAS:
            return None
        if name not in self._builtins:
            self._builtins[name] = CompiledSchema(name, builtin_schema(name))
        return self._builtins[name]


def compile_catalog(data: Mapping[str, Any], policy_dir: Path) -> SyntaxCatalog:
    """The compiled ``syntax:`` section of a policy (any shape tolerated: the schema
    check may have failed) and every problem met on the way."""
    catalog = SyntaxCatalog()
    section = data.get("syntax")
    if not isinstance(section, Mapping):
        section = {}
    for name, entry in _entries(section.get("schemas")):
        path: KeyPath = ("syntax", "schemas", name)
        compiled = _compile_named_schema(name, entry, policy_dir, path, catalog.problems)
        if compiled is not None:
            catalog.schemas[name] = compiled
    for name, entry in _entries(section.get("openapi")):
        path = ("syntax", "openapi", name)
        api = _compile_api(name, entry, policy_dir, path, catalog.problems)
        if api is not None:
            catalog.apis[name] = api
    catalog.problems.extend(_route_references(data, catalog))
    return catalog


def _entries(raw: Any) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if isinstance(raw, Mapping):
        for name, entry in raw.items():
            if isinstance(name, str) and isinstance(entry, Mapping):
                yield name, entry


def _compile_named_schema(
    name: str,
    entry: Mapping[str, Any],
    policy_dir: Path,
    path: KeyPath,
    problems: list[tuple[KeyPath, str]],
) -> CompiledSchema | None:
    if name in BUILTIN_SCHEMAS:
        problems.append(((*path,), f"{name!r} is the name of a built-in schema"))
        return None
    if "inline" in entry:
        try:
            return CompiledSchema(name, entry["inline"], base_uri=file_uri(policy_dir / "policy"))
        except _UNUSABLE_SCHEMA as exc:
            problems.append(((*path, "inline"), f"not a usable JSON Schema: {_first_line(exc)}"))
            return None
    file = entry.get("file")
    if not isinstance(file, str):
        return None
    try:
        target = (policy_dir / file).resolve()
        resources = collect_resources(target, policy_dir.resolve())
        registry = jsonschema_rs.Registry(list(resources.items()))
        return CompiledSchema(name, {"$ref": file_uri(target)}, registry=registry)
    except SchemaFileError as exc:
        where = f"{exc.file}:{exc.line}" if exc.line else str(exc.file)
        problems.append(((*path, "file"), f"{where}: {exc.message}"))
    except _UNUSABLE_SCHEMA as exc:
        problems.append(((*path, "file"), f"{file}: not a usable JSON Schema: {_first_line(exc)}"))
    return None


def _compile_api(
    name: str,
    entry: Mapping[str, Any],
    policy_dir: Path,
    path: KeyPath,
    problems: list[tuple[KeyPath, str]],
) -> CompiledApi | None:
    file = entry.get("file")
    if not isinstance(file, str):
        return None
    try:
        document = load_openapi(
            (policy_dir / file).resolve(), policy_dir.resolve(), entry.get("base_path")
        )
        return CompiledApi(name, document, entry.get("reject_unknown_query", True))
    except OpenApiError as exc:
        for location, message in exc.problems:
            problems.append(((*path, "file"), f"{file}: {location}: {message}"))
    except _UNUSABLE_SCHEMA as exc:  # a schema in the document, or a path template
        problems.append(((*path, "file"), f"{file}: {_first_line(exc)}"))
    return None


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__


def _route_references(
    data: Mapping[str, Any], catalog: SyntaxCatalog
) -> Iterator[tuple[KeyPath, str]]:
    blocks: list[tuple[KeyPath, Any]] = []
    defaults = data.get("defaults")
    if isinstance(defaults, Mapping):
        blocks.append((("defaults", "syntax"), defaults.get("syntax")))
    routes = data.get("routes")
    for index, route in enumerate(routes if isinstance(routes, list) else []):
        if isinstance(route, Mapping):
            blocks.append((("routes", index, "syntax"), route.get("syntax")))
    section = data.get("syntax") if isinstance(data.get("syntax"), Mapping) else {}
    declared_schemas = section.get("schemas") if isinstance(section, Mapping) else None
    declared_apis = section.get("openapi") if isinstance(section, Mapping) else None
    for path, block in blocks:
        if not isinstance(block, Mapping):
            continue
        schema = block.get("json_schema")
        known = isinstance(declared_schemas, Mapping) and schema in declared_schemas
        if isinstance(schema, str) and not known and schema not in BUILTIN_SCHEMAS:
            builtins = ", ".join(BUILTIN_SCHEMAS)
            yield (
                (*path, "json_schema"),
                f"no schema is named {schema!r} (syntax.schemas, or a built-in: {builtins})",
            )
        api = block.get("openapi")
        declared = isinstance(declared_apis, Mapping) and api in declared_apis
        if isinstance(api, str) and not declared:
            yield (*path, "openapi"), f"no OpenAPI document is named {api!r} (syntax.openapi)"


# ---- building a route (from a file that passed every check) ------------------------------


def build_route(raw: Mapping[str, Any], catalog: SyntaxCatalog) -> SyntaxRoute:
    llm = _llm(raw["llm"]) if "llm" in raw else None
    named = catalog.schema(raw["json_schema"]) if "json_schema" in raw else None
    schema, extra = (catalog.schema(llm.api), named) if llm is not None else (named, None)
    multipart = raw.get("multipart", {})
    fields = multipart.get("fields")
    base_multipart = MultipartLimits()
    form = raw.get("form", {})
    base_form = FormLimits()
    return SyntaxRoute(
        schema=schema,
        extra_schema=extra,
        openapi=catalog.apis[raw["openapi"]] if "openapi" in raw else None,
        llm=llm,
        form=FormLimits(
            max_fields=form.get("max_fields", base_form.max_fields),
            max_field_bytes=form.get("max_field_bytes", base_form.max_field_bytes),
        ),
        multipart=MultipartSettings(
            limits=MultipartLimits(
                max_parts=multipart.get("max_parts", base_multipart.max_parts),
                max_part_bytes=multipart.get("max_part_bytes", base_multipart.max_part_bytes),
                max_part_header_bytes=multipart.get(
                    "max_part_header_bytes", base_multipart.max_part_header_bytes
                ),
                allow_duplicate_fields=multipart.get(
                    "allow_duplicate_fields", base_multipart.allow_duplicate_fields
                ),
            ),
            fields=None
            if fields is None
            else {
                name: PartRule(
                    required=rule.get("required", False),
                    content_types=tuple(rule.get("content_types", ())),
                )
                for name, rule in fields.items()
            },
        ),
        image=_image(raw["image"]) if "image" in raw else None,
        max_violations=raw.get("max_violations", 10),
        parse_fields="form" in raw or "multipart" in raw,
    )


def _image(raw: Mapping[str, Any]) -> ImageCheck:
    base = ImageLimits()
    return ImageCheck(
        limits=ImageLimits(
            formats=frozenset(raw.get("formats", base.formats)),
            max_width=raw.get("max_width", base.max_width),
            max_height=raw.get("max_height", base.max_height),
            max_pixels=raw.get("max_pixels", base.max_pixels),
            max_frames=raw.get("max_frames", base.max_frames),
        ),
        json_pointer=raw.get("json_pointer"),
        allow_data_url=raw.get("allow_data_url", False),
        multipart_field=raw.get("multipart_field"),
    )


def _llm(raw: Mapping[str, Any]) -> LlmPolicy:
    api: LlmApi = raw["api"]
    limits: Mapping[str, Mapping[str, Any]] = raw.get("limits", {})
    default_raw = limits.get(ANY_TIER, {})
    return LlmPolicy(
        api=api,
        default=_llm_limits(default_raw),
        by_tier={
            tier: _llm_limits({**default_raw, **tier_raw})
            for tier, tier_raw in limits.items()
            if tier != ANY_TIER
        },
    )


def _llm_limits(raw: Mapping[str, Any]) -> LlmLimits:
    allowed = raw.get("allowed_parameters")
    return LlmLimits(
        max_messages=raw.get("max_messages"),
        max_message_chars=raw.get("max_message_chars"),
        max_total_chars=raw.get("max_total_chars"),
        max_output_tokens=raw.get("max_output_tokens"),
        allowed_parameters=frozenset(allowed) if allowed is not None else None,
    )
