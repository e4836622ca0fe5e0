"""Read JSON Schema files, and every local file their ``$ref``s name, into plain data.

Validators are compiled at policy load with jsonschema-rs *offline*: nothing is ever
fetched, so every document a schema refers to is read here, from below the policy
directory only, and handed over as ``{uri: document}``. Each document is keyed by the URI
jsonschema-rs will look it up by: the ``file:`` URI a relative ``$ref`` resolves to. A
document without ``$id`` takes that URI as its base, so its own relative refs resolve the
same way here and in jsonschema-rs. To compile (jsonschema-rs 0.61)::

    resources = collect_resources(entry, root)
    registry = jsonschema_rs.Registry(list(resources.items()))
    validator = jsonschema_rs.validator_for(
        {"$ref": file_uri(entry)},  # or any "uri#/json/pointer" into the resources
        registry=registry,
        offline=True,
        validate_formats=True,
    )

``Registry(...)`` raises ``ValueError`` when a schema position refers to a resource that is
not registered; ``validator_for`` raises ``jsonschema_rs.ValidationError`` (a ``ValueError``)
for an invalid schema or a ``$ref`` that does not resolve.

Limitation: a document with an absolute ``$id`` is its own base URI for jsonschema-rs, so
its relative refs resolve against that ``$id``, not against the file; such schemas work
when the files they name declare the matching ``$id``s (all are collected and registered).
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urldefrag, urljoin, urlsplit
from urllib.request import url2pathname

import yaml

from authz_service import json_pointer

_DATA_KEYWORDS = frozenset({"const", "default", "enum", "example", "examples"})
"""Keys whose values are instance data, where a ``$ref`` key is not a reference."""
OPENAPI_NAME_MAPS = frozenset(
    {
        "callbacks",
        "content",
        "encoding",
        "headers",
        "links",
        "parameters",
        "pathItems",
        "paths",
        "requestBodies",
        "responses",
        "securitySchemes",
        "variables",
        "webhooks",
    }
)
"""OpenAPI maps whose keys are names or codes ("default" is a response code)."""
SCHEMA_NAME_MAPS = ("schemas", "$defs", "definitions")
"""Maps from names to schemas."""
_NAME_MAPS = OPENAPI_NAME_MAPS | {
    *SCHEMA_NAME_MAPS,
    "dependentSchemas",
    "patternProperties",
    "properties",
}
"""Keys whose values map names to objects: a name such as ``default`` is not a keyword."""
_POINTER_SAFE = "/?:@!$&'()*+,;="
"""Characters a URI fragment may hold as they are (RFC 3986), besides letters, digits, -._~."""


class SchemaFileError(Exception):
    """A schema file that cannot be used, with the line (a syntax error) or the JSON pointer
    (a ``$ref`` in ``file``) at fault when known.

    ``message`` says where within the file and what; ``reason`` says only what.
    """

    def __init__(
        self, file: Path, message: str, line: int | None = None, pointer: str | None = None
    ) -> None:
        self.file = file
        self.reason = message
        self.message = f"at {pointer}: {message}" if pointer is not None else message
        self.line = line
        self.pointer = pointer
        where = f"{file}:{line}" if line else str(file)
        super().__init__(f"{where}: {self.message}")


def file_uri(path: Path) -> str:
    """The absolute ``file:///...`` URI of ``path`` with symlinks resolved."""
    return path.resolve().as_uri()


def pointer_uri(uri: str, pointer: str) -> str:
    """``uri`` with a JSON pointer fragment, percent-encoded as jsonschema-rs requires
    (it refuses ``{`` and ``}`` of path templates unencoded)."""
    return f"{uri}#{quote(pointer, safe=_POINTER_SAFE)}"


def lookup(resources: Mapping[str, Any], reference: str) -> Any:
    """The value an absolute ``uri#/json/pointer`` names in ``resources``.

    Raises ``LookupError`` when the document or the pointer's target does not exist.
    """
    uri, fragment = urldefrag(reference)
    if uri not in resources:
        raise LookupError(f"{uri} is not a collected document")
    pointer = unquote(fragment)
    if pointer and not pointer.startswith("/"):
        raise LookupError(f"fragment {fragment!r} is not a JSON pointer")
    value = json_pointer.resolve(resources[uri], pointer)
    if value is json_pointer.MISSING:
        raise LookupError(f"{pointer!r} does not exist in {uri}")
    return value


# ---- reading one file ----------------------------------------------------------------------


class _StrictYamlLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys (the later one would silently win) and keeps
    dates as text, as JSON would see them."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: set[str] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


def _timestamp_as_text(loader: _StrictYamlLoader, node: yaml.Node) -> str:
    return loader.construct_yaml_str(node)


_StrictYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_document(path: Path) -> Any:
    """The JSON data in a ``.json``, ``.yaml`` or ``.yml`` file.

    JSON is strict (no duplicate keys, no NaN/Infinity). Whatever the format, the result is
    plain JSON data: string keys (YAML's ``200:`` becomes ``"200"``), no dates, bytes, sets,
    infinities or recursive aliases, because jsonschema-rs takes nothing else.
    """
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise SchemaFileError(path, "not a .json, .yaml or .yml file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaFileError(path, f"cannot read the file: {exc}") from exc
    try:
        data = _parse_json(path, text) if suffix == ".json" else _parse_yaml(path, text)
        return _plain(data, "", set())
    except ValueError as exc:
        raise SchemaFileError(path, str(exc)) from exc
    except RecursionError as exc:
        raise SchemaFileError(path, "nested too deeply") from exc


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SchemaFileError(path, f"not valid JSON: {exc.msg}", exc.lineno) from exc
    except ValueError as exc:
        raise SchemaFileError(path, f"not valid JSON: {exc}") from exc


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen.add(key)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _parse_yaml(path: Path, text: str) -> Any:
    try:
        return yaml.load(text, Loader=_StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        mark = exc.problem_mark or exc.context_mark
        if mark is None:
            raise SchemaFileError(path, f"not valid YAML: {what}") from exc
        where = f" (column {mark.column + 1})"
        raise SchemaFileError(path, f"not valid YAML: {what}{where}", mark.line + 1) from exc
    except yaml.YAMLError as exc:
        raise SchemaFileError(path, f"not valid YAML: {exc}") from exc


def _plain(value: Any, pointer: str, ancestors: set[int]) -> Any:
    """A JSON-only copy of ``value`` (copied, so YAML aliases never share a node)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{pointer or '/'}: {value} is not a JSON number")
        return value
    if isinstance(value, dict | list):
        if id(value) in ancestors:
            raise ValueError(f"{pointer or '/'}: a YAML alias refers to its own ancestor")
        ancestors.add(id(value))
        try:
            if isinstance(value, list):
                return [_plain(v, f"{pointer}/{i}", ancestors) for i, v in enumerate(value)]
            return {
                key: _plain(v, f"{pointer}/{json_pointer.escape(key)}", ancestors)
                for key, v in ((_key(k, pointer), v) for k, v in value.items())
            }
        finally:
            ancestors.discard(id(value))
    raise ValueError(f"{pointer or '/'}: a {type(value).__name__} is not JSON data")


def _key(key: Any, pointer: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise ValueError(f"{pointer or '/'}: key {key!r} is not a string")


# ---- following references -------------------------------------------------------------------


@dataclass
class Collection:
    """What :func:`gather` read: the documents, and every problem on the way."""

    resources: dict[str, Any] = field(default_factory=dict)
    errors: list[SchemaFileError] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)
    """URIs of documents that could not be read or are remote (an error says why)."""


@dataclass(frozen=True, slots=True)
class _Pending:
    uri: str
    referrer: Path | None
    pointer: str | None
    ref: str | None


def collect_resources(
    entry: Path, root: Path, transform: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """``{uri: document}``: ``entry`` and every local file its ``$ref``s reach, recursively.

    ``transform`` is applied to each document as it is read (before its refs are followed).
    Raises :class:`SchemaFileError` for the first problem; :func:`gather` reports them all.
    """
    collection = gather(entry, root, transform)
    if collection.errors:
        raise collection.errors[0]
    return collection.resources


def gather(entry: Path, root: Path, transform: Callable[[Any], Any] | None = None) -> Collection:
    """Like :func:`collect_resources`, but keeps going after a problem and lists them all.

    A ``$ref`` is resolved against the URI of the file it is in. A file outside ``root``
    (after ``..`` and symlinks) is refused: a policy must not read arbitrary files. A ref to
    another scheme (``https:``, ``urn:`` ...) is accepted only when some collected document
    declares it as its ``$id``: remote references are never fetched.
    """
    collection = Collection()
    root = root.resolve()
    remote: list[tuple[_Pending, str]] = []
    queue = deque([_Pending(file_uri(entry), None, None, None)])
    while queue:
        pending = queue.popleft()
        if pending.uri in collection.resources or pending.uri in collection.unreadable:
            continue
        document = _read(pending, root, collection)
        if document is None:
            continue
        if transform is not None:
            document = transform(document)
        collection.resources[pending.uri] = document
        referrer = _path_of(pending.uri)
        for pointer, ref in _refs(document):
            target = urldefrag(urljoin(pending.uri, ref))[0]
            if target == pending.uri:
                continue
            item = _Pending(target, referrer, pointer, ref)
            if urlsplit(target).scheme == "file":
                queue.append(item)
            else:
                remote.append((item, target))
    declared = _declared_ids(collection.resources.values())
    for item, target in remote:
        if target not in declared:
            collection.errors.append(
                _ref_error(item, "remote references are not fetched; use a local file")
            )
            collection.unreadable.add(target)
    return collection


def _read(pending: _Pending, root: Path, collection: Collection) -> Any | None:
    """The document at ``pending.uri``, or ``None`` with the reason in ``collection``."""
    error: SchemaFileError | None = None
    parts = urlsplit(pending.uri)
    path = _path_of(pending.uri)
    if parts.netloc not in ("", "localhost"):
        error = _ref_error(pending, f"file URIs naming a host ({parts.netloc}) are not supported")
    elif not path.resolve().is_relative_to(root):
        error = _ref_error(pending, f"{path} is outside the policy directory {root}")
    elif not path.is_file():
        error = _ref_error(pending, f"there is no file {path}")
    else:
        try:
            return load_document(path)
        except SchemaFileError as exc:
            error = exc
    collection.errors.append(error)
    collection.unreadable.add(pending.uri)
    return None


def _ref_error(pending: _Pending, message: str) -> SchemaFileError:
    if pending.referrer is None:
        return SchemaFileError(_path_of(pending.uri), message)
    return SchemaFileError(
        pending.referrer, f"$ref {pending.ref!r}: {message}", None, pending.pointer
    )


def _path_of(uri: str) -> Path:
    return Path(url2pathname(urlsplit(uri).path))


def _refs(document: Any) -> Iterator[tuple[str, str]]:
    """``(pointer, ref)`` of every ``$ref`` outside instance data."""
    for pointer, key, value in _entries(document, "", in_name_map=False):
        if key == "$ref" and isinstance(value, str):
            yield pointer, value


def _declared_ids(documents: Iterable[Any]) -> set[str]:
    """Absolute ``$id``s (without fragment) declared anywhere in ``documents``."""
    declared: set[str] = set()
    for document in documents:
        for _, key, value in _entries(document, "", in_name_map=False):
            if key == "$id" and isinstance(value, str) and urlsplit(value).scheme:
                declared.add(urldefrag(value)[0])
    return declared


def _entries(node: Any, pointer: str, in_name_map: bool) -> Iterator[tuple[str, str, Any]]:
    """``(pointer, key, value)`` of every mapping entry, skipping instance data."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            yield from _entries(item, f"{pointer}/{index}", in_name_map=False)
    elif isinstance(node, dict):
        for key, value in node.items():
            child = f"{pointer}/{json_pointer.escape(key)}"
            if in_name_map:
                yield from _entries(value, child, in_name_map=False)
                continue
            yield child, key, value
            if key not in _DATA_KEYWORDS:
                yield from _entries(value, child, in_name_map=key in _NAME_MAPS)
