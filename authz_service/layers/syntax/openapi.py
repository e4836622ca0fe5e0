"""Read an OpenAPI 3.0/3.1 document into what the syntax layer checks requests against:
per method and path template, the path, query and header parameters and the request
body's schema per media range. Pointing a route at ``openapi.yaml`` is all it takes.

Schemas are not copied out: a parameter or body names its schema as an absolute
``uri#/json/pointer`` into :attr:`OpenApiDocument.resources` (the document and every local
file it refers to), compiled as ``{"$ref": ref}`` against
``jsonschema_rs.Registry(list(document.resources.items()))`` with ``offline=True`` (see
:mod:`.schema_files`).

OpenAPI 3.1 schemas are JSON Schema 2020-12 and are used as written. OpenAPI 3.0 schema
objects are a dialect of draft 4; each is rewritten in place, in the document and in every
local file it refers to, into the 2020-12 schema that accepts the same requests:

- ``nullable: true`` adds ``"null"`` to ``type`` (and ``null`` to ``enum``). Like OAS 3.0.3,
  only where ``type`` is written in the same schema object: ``nullable`` next to a bare
  ``$ref`` or ``allOf`` changes nothing, and such a value stays non-nullable.
- ``exclusiveMinimum: true`` with ``minimum: m`` becomes ``exclusiveMinimum: m`` (the same
  for maximum); ``exclusiveMinimum: false`` is dropped.
- ``discriminator``, ``xml``, ``externalDocs`` and ``example`` are dropped (annotations, or
  keywords 2020-12 does not have); ``deprecated``, ``readOnly`` and ``writeOnly`` are kept
  (annotations in 2020-12).
- A property with ``readOnly: true`` (written on the property, also next to a ``$ref``) is
  removed from its object's ``required``: clients do not send it. It stays allowed.
- Siblings of ``$ref`` are kept. OAS 3.0 says to ignore them; 2020-12 applies them together
  with the reference (as an ``allOf``), which is stricter, never looser.

Schema objects are found by shape, the same way in the document and in the files it refers
to: what sits under ``schema``, every member of a ``schemas``, ``$defs`` or ``definitions``
map, and any other mapping that carries a JSON Schema keyword (members of OpenAPI's name
maps, such as ``parameters`` or ``responses``, are objects whatever their names). Their
subschemas are ``properties``, ``items``, ``additionalProperties``, ``allOf``/``anyOf``/
``oneOf``, ``not`` and ``$defs``/``definitions``. Example values and ``x-`` extensions are
never touched.

Cookie parameters are ignored (the layer does not read cookies), as are header parameters
named ``Accept``, ``Content-Type`` or ``Authorization`` (OAS: they are ignored). Header
parameter names are lower-cased, as request headers are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import unquote, urldefrag, urljoin, urlsplit
from urllib.request import url2pathname

from authz_service import json_pointer
from authz_service.layers.syntax.schema_files import (
    OPENAPI_NAME_MAPS,
    SCHEMA_NAME_MAPS,
    Collection,
    file_uri,
    gather,
    lookup,
    pointer_uri,
)

ParameterLocation = Literal["path", "query", "header"]
Problem = tuple[str, str]
"""(location, message): a JSON pointer into the document, ``file#pointer`` for another file,
``line N`` when only the line is known, or ``(top level)``."""

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_PATH_ITEM_FIELDS = frozenset({"$ref", "summary", "description", "servers", "parameters"})
_LOCATIONS = ("path", "query", "header", "cookie")
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})
_STYLES: Mapping[str, str] = {"path": "simple", "query": "form", "header": "simple"}
"""The one serialisation supported per location: OpenAPI's default."""
_VERSION = re.compile(r"3\.([01])\.\d+")
_BRACED = re.compile(r"\{([^{}]*)\}")
"""A path template's parameter, or a server URL's variable."""
_TCHARS = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_RANGE = re.compile(rf"(?:\*/\*|{_TCHARS}/\*|{_TCHARS}/{_TCHARS})(?:\s*;.*)?")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,299})")
"""JSON's integer grammar, ASCII digits only (``int()`` would also take "1_000", " 12", "١٢");
longer numbers stay text (CPython refuses to parse past 4300 digits)."""
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_MAX_REF_DEPTH = 32

_SCHEMA_KEYWORDS = frozenset(
    {
        "additionalProperties",
        "allOf",
        "anyOf",
        "enum",
        "exclusiveMaximum",
        "exclusiveMinimum",
        "format",
        "items",
        "maxItems",
        "maxLength",
        "maxProperties",
        "maximum",
        "minItems",
        "minLength",
        "minProperties",
        "minimum",
        "multipleOf",
        "not",
        "nullable",
        "oneOf",
        "pattern",
        "properties",
        "type",
        "uniqueItems",
    }
)
"""Keywords that make a mapping a schema object (``required`` does not: parameters have it)."""
_DROPPED_30 = ("discriminator", "xml", "externalDocs", "example")
_FORM_MEDIA = ("application/x-www-form-urlencoded", "multipart/form-data")


# ---- what a document becomes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    """As written; lower-case for header parameters."""
    location: ParameterLocation
    required: bool
    schema: str
    """``uri#/json/pointer`` of the schema in the resources, compiled as ``{"$ref": schema}``."""
    schema_types: frozenset[str]
    """JSON types the schema allows at its top level, when determinable (else empty)."""
    item_types: frozenset[str]
    """For arrays: the items' JSON types, when determinable (else empty)."""
    explode: bool
    """Query arrays only: repeated keys (``True``, the default) or one comma-separated value."""


@dataclass(frozen=True, slots=True)
class RequestBody:
    required: bool
    content: Mapping[str, str | None]
    """Media range as written (``application/json``, ``image/*``, ``*/*``) → the schema's
    ``uri#/json/pointer``, or ``None`` when the media type has no schema."""
    field_types: Mapping[str, Mapping[str, frozenset[str]]]
    """Form media (urlencoded, multipart) → each top-level property's JSON types, so the
    fields' text can become what the schema expects (``"3"`` → ``3``)."""


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    """Upper-case."""
    template: str
    """The path template with the base path in front, e.g. ``/api/v1/models/{model}``."""
    operation_id: str | None
    parameters: tuple[Parameter, ...]
    """The path item's parameters, then the operation's; the operation's replace the path
    item's of the same name and location."""
    body: RequestBody | None


@dataclass(frozen=True, slots=True)
class OpenApiDocument:
    file: Path
    version: str
    """``"3.0"`` or ``"3.1"``."""
    operations: tuple[Operation, ...]
    """In document order."""
    resources: Mapping[str, Any]
    """``{file uri: document}`` for ``jsonschema_rs.Registry``; 3.0 schemas converted."""


class OpenApiError(Exception):
    """The document cannot be used; ``problems`` lists every problem found, not just the first."""

    def __init__(self, file: Path, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {where}: {message}" for where, message in problems))


# ---- loading --------------------------------------------------------------------------------


def load_openapi(file: Path, root: Path, base_path: str | None = None) -> OpenApiDocument:
    """The operations of the OpenAPI document ``file``, which with every local file it refers
    to must lie below ``root``.

    ``base_path`` goes in front of every path template; ``None`` takes the path of the first
    ``servers[].url`` (``https://api.example.com/v1`` → ``/v1``, variables replaced by their
    defaults); an operation's or path item's own ``servers`` override the document's. No
    servers, or ``/``, is no prefix. Raises :class:`OpenApiError` listing every problem.
    """
    collection = gather(file, root)
    reader = _Reader(file, root, collection, base_path)
    document = collection.resources.get(reader.uri)
    version = reader.version(document)
    operations: list[Operation] = []
    if version is not None:
        if version == "3.0":
            for resource in collection.resources.values():
                _convert_30(resource)
        operations = reader.operations(_At(reader.uri, "", document))
    if version is None or reader.problems:
        raise OpenApiError(file, list(dict.fromkeys(reader.problems)))
    return OpenApiDocument(file, version, tuple(operations), collection.resources)


@dataclass(frozen=True, slots=True)
class _At:
    """A value and where it is: the document's URI and the JSON pointer within it."""

    uri: str
    pointer: str
    value: Any

    def child(self, key: str | int) -> _At:
        return _At(self.uri, f"{self.pointer}/{json_pointer.escape(key)}", self.value[key])


class _Reader:
    """Walks one document, collecting operations and every problem on the way."""

    def __init__(
        self, file: Path, root: Path, collection: Collection, base_path: str | None
    ) -> None:
        self.uri = file_uri(file)
        self.root = root.resolve()
        self.resources = collection.resources
        self.unreadable = collection.unreadable
        self.base_path = None if base_path is None else _base(base_path)
        self.problems: list[Problem] = [
            (self.where(file_uri(e.file), e.pointer, e.line), e.reason) for e in collection.errors
        ]
        self.operation_ids: dict[str, str] = {}

    def where(self, uri: str, pointer: str | None, line: int | None = None) -> str:
        inside = pointer or (f"line {line}" if line else "")
        if uri == self.uri:
            return inside or "(top level)"
        path = Path(url2pathname(urlsplit(uri).path))
        name = str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)
        if pointer is not None:
            return f"{name}#{pointer}"
        return f"{name}:{line}" if line else name

    def problem(self, at: _At, message: str) -> None:
        self.problems.append((self.where(at.uri, at.pointer), message))

    # -- the document --

    def version(self, document: Any) -> str | None:
        if self.uri in self.unreadable:
            return None
        top = _At(self.uri, "", document)
        if not isinstance(document, dict):
            self.problem(top, "an OpenAPI document is a mapping")
            return None
        if "swagger" in document:
            self.problem(top.child("swagger"), "Swagger 2.0 is not supported: use OpenAPI 3")
            return None
        raw = document.get("openapi")
        found = _VERSION.fullmatch(raw) if isinstance(raw, str) else None
        if found is None:
            where = top.child("openapi") if "openapi" in document else top
            self.problem(where, f"'openapi' must be 3.0.x or 3.1.x, as a string, not {raw!r}")
            return None
        return f"3.{found.group(1)}"

    def operations(self, top: _At) -> list[Operation]:
        if not isinstance(top.value.get("paths"), dict):
            self.problem(top, "'paths' must map path templates to path items")
            return []
        paths = top.child("paths")
        base = self.base(top, "")
        shapes: dict[str, str] = {}
        operations: list[Operation] = []
        for key in paths.value:
            names = self.template(paths.child(key), key, shapes)
            item = self.deref(paths.child(key))
            if item is None or names is None:
                continue
            if not isinstance(item.value, dict):
                self.problem(item, "a path item is a mapping")
                continue
            operations.extend(self.path_item(item, key, names, base))
        return operations

    def base(self, at: _At, inherited: str) -> str:
        """The base path of ``at``'s operations: explicit, from ``at``'s servers, or
        ``inherited``."""
        if self.base_path is not None:
            return self.base_path
        if "servers" not in at.value:
            return inherited
        servers = at.child("servers")
        if not isinstance(servers.value, list):
            self.problem(servers, "'servers' is a list")
            return inherited
        if not servers.value:
            return inherited
        first = servers.child(0)
        url = first.value.get("url") if isinstance(first.value, dict) else None
        if not isinstance(url, str):
            self.problem(first, "a server needs a 'url'")
            return inherited
        return _base(urlsplit(self.server_url(first, url)).path)

    def server_url(self, server: _At, url: str) -> str:
        """``url`` with each ``{variable}`` replaced by its default."""
        variables = server.value.get("variables")
        variables = variables if isinstance(variables, dict) else {}

        def default(found: re.Match[str]) -> str:
            variable = variables.get(found.group(1))
            value = variable.get("default") if isinstance(variable, dict) else None
            if not isinstance(value, str):
                self.problem(server, f"server variable {found.group(1)!r} has no default")
                return ""
            return value

        return _BRACED.sub(default, url)

    def template(self, at: _At, key: str, shapes: dict[str, str]) -> list[str] | None:
        """The parameter names in path template ``key``, or ``None`` if it is malformed."""
        if not key.startswith("/"):
            self.problem(at, "a path template starts with '/'")
        if "?" in key or "#" in key:
            self.problem(at, "a path template has no query string or fragment")
        names = _BRACED.findall(key)
        rest = _BRACED.sub("", key)
        if "{" in rest or "}" in rest or "" in names:
            self.problem(at, "unbalanced or empty '{}' in the path template")
            return None
        for name in sorted({name for name in names if names.count(name) > 1}):
            self.problem(at, f"path parameter {{{name}}} appears twice")
        shape = _BRACED.sub("{}", key)
        if shape in shapes:
            self.problem(at, f"the same path as {shapes[shape]!r}, but for parameter names")
        shapes.setdefault(shape, key)
        return names

    # -- path items and operations --

    def path_item(self, item: _At, key: str, names: list[str], base: str) -> list[Operation]:
        for field in item.value:
            if (
                field not in _METHODS
                and field not in _PATH_ITEM_FIELDS
                and not field.startswith("x-")
            ):
                self.problem(
                    item.child(field),
                    f"{field!r} is neither an HTTP method OpenAPI allows "
                    f"({', '.join(_METHODS)}) nor a path item field",
                )
        shared = self.parameters(item)
        base = self.base(item, base)
        operations: list[Operation] = []
        for method in _METHODS:
            if method not in item.value:
                continue
            operation = item.child(method)
            if not isinstance(operation.value, dict):
                self.problem(operation, "an operation is a mapping")
                continue
            operations.append(self.operation(operation, method, key, names, shared, base))
        return operations

    def operation(
        self,
        operation: _At,
        method: str,
        key: str,
        names: list[str],
        shared: dict[tuple[str, str], Parameter | None],
        base: str,
    ) -> Operation:
        merged = {**shared, **self.parameters(operation)}
        self.check_path_parameters(operation, names, merged)
        body = None
        if "requestBody" in operation.value:
            body = self.request_body(operation.child("requestBody"))
        return Operation(
            method=method.upper(),
            template=self.base(operation, base) + key,
            operation_id=self.operation_id(operation),
            parameters=tuple(p for p in merged.values() if p is not None),
            body=body,
        )

    def operation_id(self, operation: _At) -> str | None:
        if "operationId" not in operation.value:
            return None
        at = operation.child("operationId")
        if not isinstance(at.value, str):
            self.problem(at, "'operationId' is a string")
            return None
        where = self.where(operation.uri, operation.pointer)
        first = self.operation_ids.setdefault(at.value, where)
        if first != where:
            self.problem(at, f"operationId {at.value!r} is also the id of {first}")
        return at.value

    def check_path_parameters(
        self, operation: _At, names: list[str], merged: dict[tuple[str, str], Parameter | None]
    ) -> None:
        declared = {name for name, location in merged if location == "path"}
        for name in names:
            if name not in declared:
                self.problem(
                    operation,
                    f"path parameter {{{name}}} of the template is not declared "
                    "(a parameter with in: path, required: true)",
                )
        for name in sorted(declared - set(names)):
            self.problem(operation, f"parameter {name!r} is in: path but not in the template")

    # -- parameters --

    def parameters(self, owner: _At) -> dict[tuple[str, str], Parameter | None]:
        """``(name, in)`` → the parameter, or ``None`` if it is declared but unusable."""
        if "parameters" not in owner.value:
            return {}
        listed = owner.child("parameters")
        if not isinstance(listed.value, list):
            self.problem(listed, "'parameters' is a list")
            return {}
        found: dict[tuple[str, str], Parameter | None] = {}
        for index in range(len(listed.value)):
            entry = self.deref(listed.child(index))
            declared = self.parameter(entry) if entry is not None else None
            if declared is None:
                continue
            key, parameter = declared
            if key in found:
                self.problem(listed.child(index), f"parameter {key[0]!r} in {key[1]} is repeated")
            found[key] = parameter
        return found

    def parameter(self, at: _At) -> tuple[tuple[str, str], Parameter | None] | None:
        """The parameter's key and the parameter; ``None`` when it has neither or is
        ignored (cookies, and the headers OpenAPI ignores)."""
        if not isinstance(at.value, dict):
            self.problem(at, "a parameter is a mapping")
            return None
        name, location = at.value.get("name"), at.value.get("in")
        if not isinstance(name, str) or not name:
            self.problem(at, "a parameter needs a 'name'")
        if location not in _LOCATIONS:
            self.problem(at, f"'in' must be one of {', '.join(_LOCATIONS)}, not {location!r}")
        if not (isinstance(name, str) and name and isinstance(location, str)):
            return None
        if location not in _STYLES:  # cookie, or not a location (noted above)
            return None
        if location == "header":
            name = name.lower()
            if name in _IGNORED_HEADERS:
                return None
        return (name, location), self.parameter_of(at, name, location)

    def parameter_of(self, at: _At, name: str, location: str) -> Parameter | None:
        required = at.value.get("required", False)
        if not isinstance(required, bool):
            self.problem(at, "'required' is true or false")
        elif location == "path" and not required:
            self.problem(at, "a path parameter must have required: true")
        style = at.value.get("style", _STYLES[location])
        if style != _STYLES[location]:
            self.problem(
                at, f"style {style!r} is not supported in {location} (only {_STYLES[location]})"
            )
        explode = at.value.get("explode", location == "query")
        if not isinstance(explode, bool):
            self.problem(at, "'explode' is true or false")
        if "content" in at.value:
            self.problem(at, "parameters described by 'content' are not supported: use 'schema'")
            return None
        if "schema" not in at.value:
            self.problem(at, "a parameter needs a 'schema'")
            return None
        schema = at.child("schema")
        types = self.types(schema, 0)
        if "object" in types:
            self.problem(schema, "object-valued parameters are not supported")
        return Parameter(
            name=name,
            location=cast(ParameterLocation, location),
            required=required is True,
            schema=pointer_uri(schema.uri, schema.pointer),
            schema_types=types,
            item_types=self.item_types(schema, 0) if "array" in types else frozenset(),
            explode=explode is True,
        )

    # -- request bodies --

    def request_body(self, at: _At) -> RequestBody | None:
        body = self.deref(at)
        if body is None:
            return None
        if not isinstance(body.value, dict):
            self.problem(body, "a request body is a mapping")
            return None
        required = body.value.get("required", False)
        if not isinstance(required, bool):
            self.problem(body, "'required' is true or false")
        if not isinstance(body.value.get("content"), dict) or not body.value["content"]:
            self.problem(body, "'content' must map at least one media range to a media type")
            return None
        content = body.child("content")
        media: dict[str, str | None] = {}
        field_types: dict[str, Mapping[str, frozenset[str]]] = {}
        for media_range in content.value:
            entry = content.child(media_range)
            if not _MEDIA_RANGE.fullmatch(media_range):
                self.problem(entry, f"{media_range!r} is not a media range (type/subtype)")
            if not isinstance(entry.value, dict):
                self.problem(entry, "a media type object is a mapping")
                continue
            schema = f"{entry.pointer}/schema"
            media[media_range] = pointer_uri(entry.uri, schema) if "schema" in entry.value else None
            if media_range in _FORM_MEDIA and "schema" in entry.value:
                field_types[media_range] = self.property_types(entry.child("schema"), 0)
        return RequestBody(required is True, media, field_types)

    # -- references --

    def deref(self, at: _At) -> _At | None:
        """``at``, or what its ``$ref`` chain leads to; ``None`` (with the problem noted,
        unless collecting the files already did) when it leads nowhere."""
        seen: set[str] = set()
        while isinstance(at.value, dict) and isinstance(at.value.get("$ref"), str):
            ref = at.value["$ref"]
            target = urljoin(at.uri, ref)
            uri = urldefrag(target)[0]
            if uri in self.unreadable:
                return None
            if target in seen:
                self.problem(at.child("$ref"), f"$ref {ref!r} is circular")
                return None
            seen.add(target)
            try:
                at = _At(uri, unquote(urldefrag(target)[1]), lookup(self.resources, target))
            except LookupError as exc:
                self.problem(at.child("$ref"), f"$ref {ref!r} does not resolve: {exc}")
                return None
        return at

    def follow(self, at: _At) -> _At | None:
        """The schema a schema's ``$ref`` names, or ``None`` (compiling will say why)."""
        target = urljoin(at.uri, at.value["$ref"])
        try:
            value = lookup(self.resources, target)
        except LookupError:
            return None
        uri, fragment = urldefrag(target)
        return _At(uri, unquote(fragment), value)

    def types(self, schema: _At, depth: int) -> frozenset[str]:
        """The JSON types ``schema`` allows at its top level, or empty when unclear."""
        value = schema.value
        if not isinstance(value, dict) or depth > _MAX_REF_DEPTH:
            return frozenset()
        declared = value.get("type")
        if isinstance(declared, str):
            return frozenset({declared})
        if isinstance(declared, list):
            return frozenset(item for item in declared if isinstance(item, str))
        if "const" in value:
            return frozenset({_json_type(value["const"])})
        if isinstance(value.get("enum"), list) and value["enum"]:
            return frozenset(_json_type(item) for item in value["enum"])
        if isinstance(value.get("$ref"), str):
            target = self.follow(schema)
            return self.types(target, depth + 1) if target is not None else frozenset()
        return self.combined_types(schema, depth)

    def combined_types(self, schema: _At, depth: int) -> frozenset[str]:
        """Types through ``allOf`` (what every part allows) or ``anyOf``/``oneOf`` (what
        some branch allows, when every branch is clear)."""
        for keyword in ("allOf", "anyOf", "oneOf"):
            parts = schema.value.get(keyword)
            if not isinstance(parts, list) or not parts:
                continue
            found = [
                self.types(schema.child(keyword).child(i), depth + 1) for i in range(len(parts))
            ]
            known = [types for types in found if types]
            if keyword == "allOf" and len(known) == 1:
                return known[0]
            if keyword == "allOf" and known:
                return frozenset.intersection(*map(_widen, known))
            if keyword != "allOf" and all(found):
                return frozenset.union(*found)
        return frozenset()

    def property_types(self, schema: _At, depth: int) -> dict[str, frozenset[str]]:
        """Each top-level property's types (through ``$ref``), for form fields."""
        value = schema.value
        if not isinstance(value, dict) or depth > _MAX_REF_DEPTH:
            return {}
        if isinstance(value.get("$ref"), str):
            target = self.follow(schema)
            return self.property_types(target, depth + 1) if target is not None else {}
        properties = value.get("properties")
        if not isinstance(properties, dict):
            return {}
        at = schema.child("properties")
        return {
            name: types
            for name in properties
            if isinstance(name, str) and (types := self.types(at.child(name), 0))
        }

    def item_types(self, schema: _At, depth: int) -> frozenset[str]:
        value = schema.value
        if not isinstance(value, dict) or depth > _MAX_REF_DEPTH:
            return frozenset()
        if "items" in value:
            return self.types(schema.child("items"), 0)
        if isinstance(value.get("$ref"), str):
            target = self.follow(schema)
            return self.item_types(target, depth + 1) if target is not None else frozenset()
        return frozenset()


def _base(path: str) -> str:
    """``/v1/`` → ``/v1``; ``/`` and ``""`` → ``""`` (templates bring their own ``/``)."""
    stripped = path.strip("/")
    return f"/{stripped}" if stripped else ""


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _widen(types: frozenset[str]) -> frozenset[str]:
    """Every integer is a number: ``{"number"}`` also allows what ``{"integer"}`` does."""
    return types | {"integer"} if "number" in types else types


# ---- OpenAPI 3.0 schemas → JSON Schema 2020-12 ----------------------------------------------


def _convert_30(node: Any) -> None:
    """Convert, in place, every schema object in ``node`` (a 3.0 document, or a local file
    it refers to), found by shape (see the module docstring)."""
    if isinstance(node, list):
        for item in node:
            _convert_30(item)
    elif isinstance(node, dict):
        if node.keys() & _SCHEMA_KEYWORDS:
            _convert_30_schema(node)
            return
        for key, value in node.items():
            if key == "schema":
                _convert_30_schema(value)
            elif key in SCHEMA_NAME_MAPS and isinstance(value, dict):
                for schema in value.values():
                    _convert_30_schema(schema)
            elif key in OPENAPI_NAME_MAPS and isinstance(value, dict):
                for member in value.values():
                    _convert_30(member)
            elif key not in ("example", "examples") and not key.startswith("x-"):
                _convert_30(value)


def _convert_30_schema(schema: Any) -> None:
    if not isinstance(schema, dict):
        return
    for key in _DROPPED_30:
        schema.pop(key, None)
    _widen_nullable(schema)
    _exclusive_bound(schema, "minimum", "exclusiveMinimum")
    _exclusive_bound(schema, "maximum", "exclusiveMaximum")
    for key in ("items", "additionalProperties", "not"):
        _convert_30_schema(schema.get(key))
    for key in ("allOf", "anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            for subschema in schema[key]:
                _convert_30_schema(subschema)
    for key in ("properties", "$defs", "definitions"):
        if isinstance(schema.get(key), dict):
            for subschema in schema[key].values():
                _convert_30_schema(subschema)
    _unrequire_read_only(schema)


def _widen_nullable(schema: dict[str, Any]) -> None:
    if schema.pop("nullable", False) is not True or "type" not in schema:
        return
    declared = schema["type"]
    if isinstance(declared, str):
        schema["type"] = [declared, "null"]
    elif isinstance(declared, list) and "null" not in declared:
        declared.append("null")
    enum = schema.get("enum")
    if isinstance(enum, list) and not any(item is None for item in enum):
        enum.append(None)


def _exclusive_bound(schema: dict[str, Any], bound: str, exclusive: str) -> None:
    """Draft 4's boolean ``exclusiveMinimum`` → 2020-12's number (likewise maximum)."""
    flag = schema.get(exclusive)
    if not isinstance(flag, bool):
        return
    del schema[exclusive]
    if flag and bound in schema:
        schema[exclusive] = schema.pop(bound)


def _unrequire_read_only(schema: dict[str, Any]) -> None:
    """OAS 3.0: a required ``readOnly`` property is required in responses only."""
    required, properties = schema.get("required"), schema.get("properties")
    if not isinstance(required, list) or not isinstance(properties, dict):
        return
    kept = [
        name
        for name in required
        if not (
            isinstance(name, str)
            and isinstance(properties.get(name), dict)
            and properties[name].get("readOnly") is True
        )
    ]
    if len(kept) < len(required):
        schema["required"] = kept


# ---- request text → JSON values -------------------------------------------------------------


def coerce_parameter(raw: list[str], parameter: Parameter) -> Any:
    """The value the parameter's schema is applied to, from its text values.

    ``raw`` holds every value received (query: one per occurrence of the key; path and
    header: one). Raises ``KeyError`` when ``raw`` is empty: absence is the caller's to
    judge, from ``parameter.required``. Raises ``ValueError`` (a message for the client)
    when a parameter that takes one value is given several times.

    Arrays: exploded query parameters are repeated keys (``?id=1&id=2``); otherwise one
    comma-separated value (``?id=1,2``, ``/items/1,2``, ``x-ids: 1, 2``); an empty value is
    an empty array. Each value, or item, is then turned into what the schema expects
    (:func:`coerce_text`).
    """
    if not raw:
        raise KeyError(parameter.name)
    if "array" in parameter.schema_types:
        return [coerce_text(item, parameter.item_types) for item in _array_items(raw, parameter)]
    if len(raw) > 1:
        raise ValueError(f"given {len(raw)} times; it takes one value")
    return coerce_text(raw[0], parameter.schema_types)


def _array_items(raw: list[str], parameter: Parameter) -> list[str]:
    if parameter.location == "query" and parameter.explode:
        return raw
    if len(raw) > 1:
        raise ValueError(f"given {len(raw)} times; it takes one comma-separated list")
    if not raw[0]:
        return []
    items = raw[0].split(",")
    return [item.strip() for item in items] if parameter.location == "header" else items


def coerce_text(value: str, types: frozenset[str]) -> Any:
    """``value`` as the JSON type the schema allows, if it reads as one; else the text.

    Integers and numbers in JSON's grammar only ("12" → 12; "1.5" → 1.5 only where a number
    is allowed, so an integer schema rejects it; "1e400", "NaN", "0x1f" stay text); booleans
    are exactly ``true``/``false``. Text that does not read as an allowed type stays text,
    for the schema to reject with its own message; nothing ever becomes ``null``.
    """
    if types & {"integer", "number"} and _INTEGER.fullmatch(value):
        return int(value)
    if "number" in types and _NUMBER.fullmatch(value):
        number = float(value)
        return number if math.isfinite(number) else value
    if "boolean" in types and value in ("true", "false"):
        return value == "true"
    return value
