"""OpenAPI documents and JSON Schema files read from disk: operations, the 3.0 → 2020-12
conversion (checked by compiling with jsonschema-rs through the registry, as the syntax
layer does), parameter coercion, every problem with its location, and the file boundary."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest

from authz_service.layers.syntax.openapi import (
    OpenApiDocument,
    OpenApiError,
    Operation,
    Parameter,
    ParameterLocation,
    coerce_parameter,
    coerce_text,
    load_openapi,
)
from authz_service.layers.syntax.schema_files import (
    SchemaFileError,
    collect_resources,
    file_uri,
    load_document,
)

# --- fixtures ------------------------------------------------------------------------------

OPENAPI_30 = """
openapi: 3.0.3
info: {title: classifier, version: "1"}
servers:
  - url: https://api.example.com/v1
  - url: https://staging.example.com/v2
paths:
  /classify:
    post:
      operationId: classify
      parameters:
        - $ref: '#/components/parameters/Limit'
        - name: tags
          in: query
          schema: {type: array, items: {type: string}}
        - name: ids
          in: query
          explode: false
          schema: {type: array, items: {$ref: '#/components/schemas/Id'}}
        - name: X-Trace
          in: header
          schema: {type: string}
        - name: Accept
          in: header
          schema: {type: string}
        - name: session
          in: cookie
          schema: {type: string}
      requestBody:
        $ref: '#/components/requestBodies/Classify'
  /images:
    post:
      operationId: uploadImage
      requestBody:
        content:
          image/*: {}
          multipart/form-data:
            schema:
              type: object
              required: [image]
              properties:
                image: {type: string, format: binary}
                label: {type: string, nullable: true}
  /models/{model}:
    parameters:
      - name: model
        in: path
        required: true
        schema: {type: string, pattern: '^[a-z0-9-]+$'}
      - name: verbose
        in: query
        schema: {type: boolean}
    get:
      operationId: getModel
      parameters:
        - name: verbose
          in: query
          required: true
          schema: {type: integer}
    put:
      requestBody:
        required: true
        content:
          application/json:
            schema: {$ref: 'schemas/model.yaml'}
components:
  parameters:
    Limit:
      name: limit
      in: query
      schema: {type: integer, minimum: 0, exclusiveMinimum: true, maximum: 100}
  requestBodies:
    Classify:
      required: true
      content:
        application/json:
          schema: {$ref: '#/components/schemas/Classify'}
  schemas:
    Id: {type: integer, minimum: 1}
    Classify:
      type: object
      required: [id, text]
      additionalProperties: false
      discriminator: {propertyName: kind}
      example: {text: hello}
      xml: {name: classify}
      externalDocs: {url: https://example.com}
      properties:
        id: {type: string, readOnly: true}
        text: {type: string, nullable: true, example: hello}
        score:
          type: number
          minimum: 0
          exclusiveMinimum: true
          maximum: 1
          exclusiveMaximum: false
        kind: {type: string, enum: [a, b], nullable: true}
        owner: {$ref: 'common/types.yaml#/Owner'}
        example: {type: string}
      x-example: {nullable: true}
"""

MODEL_30 = """
type: object
required: [size]
properties:
  size: {$ref: '../common/types.yaml#/Size'}
  created: {type: string, format: date-time, example: 2024-01-01}
"""

TYPES_30 = """
Owner: {type: string, nullable: true}
Size: {type: integer, minimum: 1, exclusiveMinimum: true}
"""

OPENAPI_31 = """
{
  "openapi": "3.1.0",
  "info": {"title": "models", "version": "1"},
  "servers": [{"url": "/api/"}],
  "paths": {
    "/v1/models/{model}": {
      "get": {
        "parameters": [
          {"name": "model", "in": "path", "required": true, "schema": {"type": "string"}},
          {"name": "n", "in": "query", "schema": {"type": ["integer", "null"]}}
        ]
      },
      "post": {
        "parameters": [{"$ref": "#/components/parameters/Model"}],
        "requestBody": {
          "content": {
            "application/json": {"schema": {"$ref": "defs.json#/$defs/Request"}},
            "*/*": {}
          }
        }
      }
    }
  },
  "components": {
    "parameters": {
      "Model": {"name": "model", "in": "path", "required": true, "schema": {"type": "string"}}
    }
  }
}
"""

DEFS_31 = """
{
  "$defs": {
    "Request": {
      "type": "object",
      "required": ["temperature"],
      "properties": {
        "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
        "user": {"type": ["string", "null"]}
      }
    }
  }
}
"""


def write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def api30(tmp_path: Path) -> OpenApiDocument:
    write(
        tmp_path,
        {
            "openapi.yaml": OPENAPI_30,
            "schemas/model.yaml": MODEL_30,
            "common/types.yaml": TYPES_30,
        },
    )
    return load_openapi(tmp_path / "openapi.yaml", tmp_path)


@pytest.fixture
def api31(tmp_path: Path) -> OpenApiDocument:
    write(tmp_path, {"openapi.json": OPENAPI_31, "defs.json": DEFS_31})
    return load_openapi(tmp_path / "openapi.json", tmp_path)


def operation(document: OpenApiDocument, method: str, template: str) -> Operation:
    for found in document.operations:
        if (found.method, found.template) == (method, template):
            return found
    raise AssertionError(f"no {method} {template}")


def parameter(op: Operation, name: str) -> Parameter:
    return next(p for p in op.parameters if p.name == name)


def validator(document: OpenApiDocument, ref: str | None) -> jsonschema_rs.Validator:
    """Compiled exactly as the syntax layer compiles it."""
    assert ref is not None
    registry = jsonschema_rs.Registry(list(document.resources.items()))
    return jsonschema_rs.validator_for(
        {"$ref": ref}, registry=registry, offline=True, validate_formats=True
    )


def problems_of(tmp_path: Path, document: str, **files: str) -> list[tuple[str, str]]:
    write(tmp_path, {"openapi.yaml": document, **files})
    with pytest.raises(OpenApiError) as caught:
        load_openapi(tmp_path / "openapi.yaml", tmp_path)
    return caught.value.problems


def has(problems: list[tuple[str, str]], location: str, words: str) -> bool:
    return any(where == location and words in message for where, message in problems)


# --- operations ----------------------------------------------------------------------------


def test_operations_of_a_30_document(api30: OpenApiDocument, tmp_path: Path) -> None:
    assert api30.version == "3.0"
    assert api30.file == tmp_path / "openapi.yaml"
    assert [(op.method, op.template, op.operation_id) for op in api30.operations] == [
        ("POST", "/v1/classify", "classify"),
        ("POST", "/v1/images", "uploadImage"),
        ("GET", "/v1/models/{model}", "getModel"),
        ("PUT", "/v1/models/{model}", None),
    ]
    assert set(api30.resources) == {
        file_uri(tmp_path / "openapi.yaml"),
        file_uri(tmp_path / "schemas/model.yaml"),
        file_uri(tmp_path / "common/types.yaml"),
    }


def test_parameters_come_from_components_and_ignore_cookies_and_accept(
    api30: OpenApiDocument,
) -> None:
    classify = operation(api30, "POST", "/v1/classify")
    assert [(p.name, p.location) for p in classify.parameters] == [
        ("limit", "query"),
        ("tags", "query"),
        ("ids", "query"),
        ("x-trace", "header"),
    ]
    limit = parameter(classify, "limit")
    uri = file_uri(api30.file)
    assert limit.schema == f"{uri}#/components/parameters/Limit/schema"
    assert (limit.required, set(limit.schema_types), limit.explode) == (False, {"integer"}, True)
    tags = parameter(classify, "tags")
    assert (set(tags.schema_types), set(tags.item_types)) == ({"array"}, {"string"})
    ids = parameter(classify, "ids")
    assert (set(ids.item_types), ids.explode) == ({"integer"}, False)
    assert parameter(classify, "x-trace").explode is False


def test_operation_parameters_override_the_path_items(api30: OpenApiDocument) -> None:
    get = operation(api30, "GET", "/v1/models/{model}")
    assert [(p.name, p.location, p.required) for p in get.parameters] == [
        ("model", "path", True),
        ("verbose", "query", True),
    ]
    assert parameter(get, "verbose").schema_types == {"integer"}
    put = operation(api30, "PUT", "/v1/models/{model}")
    assert parameter(put, "verbose").schema_types == {"boolean"}
    model = parameter(get, "model")
    assert model.schema.endswith("#/paths/~1models~1%7Bmodel%7D/parameters/0/schema")
    assert validator(api30, model.schema).is_valid("gpt-4o")
    assert not validator(api30, model.schema).is_valid("GPT 4o")


def test_request_bodies_by_media_range(api30: OpenApiDocument) -> None:
    classify = operation(api30, "POST", "/v1/classify")
    assert classify.body is not None and classify.body.required
    assert list(classify.body.content) == ["application/json"]
    images = operation(api30, "POST", "/v1/images")
    assert images.body is not None and not images.body.required
    assert images.body.content["image/*"] is None
    multipart = validator(api30, images.body.content["multipart/form-data"])
    assert multipart.is_valid({"image": "…", "label": None})
    assert not multipart.is_valid({"label": "cat"})
    assert operation(api30, "GET", "/v1/models/{model}").body is None


def test_a_31_document(api31: OpenApiDocument) -> None:
    assert api31.version == "3.1"
    get = operation(api31, "GET", "/api/v1/models/{model}")
    assert parameter(get, "n").schema_types == {"integer", "null"}
    post = operation(api31, "POST", "/api/v1/models/{model}")
    assert parameter(post, "model").schema.endswith("#/components/parameters/Model/schema")
    assert post.body is not None and post.body.content["*/*"] is None
    body = validator(api31, post.body.content["application/json"])
    assert body.is_valid({"temperature": 0.5, "user": None})
    assert not body.is_valid({"temperature": 0})  # exclusiveMinimum: 0, kept as written
    assert not body.is_valid({"temperature": 3})


# --- base path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("servers", "base_path", "expected"),
    [
        ("servers: [{url: 'https://api.example.com/v1'}]", None, "/v1/x"),
        ("servers: [{url: 'https://api.example.com'}]", None, "/x"),
        ("servers: [{url: /}]", None, "/x"),
        ("servers: [{url: 'api/v2/'}]", None, "/api/v2/x"),
        ("", None, "/x"),
        (
            "servers: [{url: 'https://{host}/{base}', variables: "
            "{host: {default: a.example}, base: {default: v3}}}]",
            None,
            "/v3/x",
        ),
        ("servers: [{url: 'https://api.example.com/v1'}]", "/internal/", "/internal/x"),
        ("servers: [{url: 'https://api.example.com/v1'}]", "", "/x"),
    ],
)
def test_base_path(tmp_path: Path, servers: str, base_path: str | None, expected: str) -> None:
    document = f"openapi: 3.0.0\n{servers}\npaths:\n  /x:\n    get: {{}}\n"
    write(tmp_path, {"openapi.yaml": document})
    loaded = load_openapi(tmp_path / "openapi.yaml", tmp_path, base_path)
    assert [op.template for op in loaded.operations] == [expected]


def test_servers_of_a_path_item_or_operation_override_the_documents(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "openapi.yaml": """
            openapi: 3.1.0
            servers: [{url: /v1}]
            paths:
              /a:
                servers: [{url: /v2}]
                get: {}
                post: {servers: [{url: /v3}]}
              /b:
                get: {}
            """
        },
    )
    loaded = load_openapi(tmp_path / "openapi.yaml", tmp_path)
    assert [(op.method, op.template) for op in loaded.operations] == [
        ("GET", "/v2/a"),
        ("POST", "/v3/a"),
        ("GET", "/v1/b"),
    ]


# --- OpenAPI 3.0 → JSON Schema 2020-12 -----------------------------------------------------


def test_nullable_admits_null(api30: OpenApiDocument) -> None:
    classify = operation(api30, "POST", "/v1/classify")
    assert classify.body is not None
    body = validator(api30, classify.body.content["application/json"])
    assert body.is_valid({"text": None})
    assert body.is_valid({"text": "hi", "kind": None})  # enum gained null too
    assert body.is_valid({"text": "hi", "owner": None})  # in a referenced file
    assert not body.is_valid({"text": "hi", "kind": "c"})
    assert not body.is_valid({"text": 3})


def test_boolean_exclusive_bounds_become_numbers(api30: OpenApiDocument) -> None:
    classify = operation(api30, "POST", "/v1/classify")
    assert classify.body is not None
    body = validator(api30, classify.body.content["application/json"])
    assert not body.is_valid({"text": "hi", "score": 0})
    assert body.is_valid({"text": "hi", "score": 0.01})
    assert body.is_valid({"text": "hi", "score": 1})  # exclusiveMaximum: false
    limit = validator(api30, parameter(classify, "limit").schema)
    assert not limit.is_valid(0)
    assert limit.is_valid(1)
    assert limit.is_valid(100)
    put = operation(api30, "PUT", "/v1/models/{model}")
    assert put.body is not None
    model = validator(api30, put.body.content["application/json"])
    assert not model.is_valid({"size": 1})  # in a file two refs away
    assert model.is_valid({"size": 2, "created": "2024-01-01T00:00:00Z"})
    assert not model.is_valid({"size": 2, "created": "yesterday"})


def test_read_only_properties_are_not_required_in_requests(api30: OpenApiDocument) -> None:
    classify = operation(api30, "POST", "/v1/classify")
    assert classify.body is not None
    body = validator(api30, classify.body.content["application/json"])
    assert body.is_valid({"text": "hi"})
    assert body.is_valid({"text": "hi", "id": "x"})  # still allowed when sent
    assert not body.is_valid({"id": "x"})  # text is still required


def test_30_only_keywords_are_dropped_from_schemas_only(api30: OpenApiDocument) -> None:
    schema = api30.resources[file_uri(api30.file)]["components"]["schemas"]["Classify"]
    assert not {"discriminator", "xml", "externalDocs", "example", "nullable"} & schema.keys()
    assert schema["required"] == ["text"]
    assert schema["properties"]["text"] == {"type": ["string", "null"]}
    assert schema["properties"]["example"] == {"type": "string"}  # a property, not a keyword
    assert schema["x-example"] == {"nullable": True}  # extensions are left alone
    model = api30.resources[file_uri(api30.file.parent / "schemas/model.yaml")]
    assert model["properties"]["created"] == {"type": "string", "format": "date-time"}


def test_components_named_like_keywords_are_converted(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "openapi.yaml": """
            openapi: 3.0.3
            paths:
              /x:
                get:
                  parameters: [{$ref: '#/components/parameters/format'}]
            components:
              parameters:
                format:
                  name: format
                  in: query
                  schema: {type: integer, minimum: 1, exclusiveMinimum: true, nullable: true}
            """
        },
    )
    loaded = load_openapi(tmp_path / "openapi.yaml", tmp_path)
    (format_,) = loaded.operations[0].parameters
    schema = validator(loaded, format_.schema)
    assert (schema.is_valid(1), schema.is_valid(2), schema.is_valid(None)) == (False, True, True)


# --- coercion ------------------------------------------------------------------------------


def param(
    types: set[str],
    items: set[str] | None = None,
    location: ParameterLocation = "query",
    explode: bool = True,
) -> Parameter:
    return Parameter(
        "p", location, False, "file:///x.yaml#/s", frozenset(types), frozenset(items or ()), explode
    )


@pytest.mark.parametrize(
    ("text", "types", "expected"),
    [
        ("12", {"integer"}, 12),
        ("-3", {"integer"}, -3),
        ("1.5", {"integer"}, "1.5"),
        ("1e3", {"integer"}, "1e3"),
        ("012", {"integer"}, "012"),
        ("1_000", {"integer"}, "1_000"),
        (" 12", {"integer"}, " 12"),
        ("١٢", {"integer"}, "١٢"),
        ("9" * 400, {"integer"}, "9" * 400),
        ("1.5", {"number"}, 1.5),
        ("2", {"number"}, 2),
        ("1e400", {"number"}, "1e400"),
        ("NaN", {"number"}, "NaN"),
        ("true", {"boolean"}, True),
        ("false", {"boolean", "null"}, False),
        ("True", {"boolean"}, "True"),
        ("12", {"string"}, "12"),
        ("12", set(), "12"),
        ("12", {"integer", "string"}, 12),
        ("null", {"null", "string"}, "null"),
    ],
)
def test_coerce_text(text: str, types: set[str], expected: Any) -> None:
    coerced = coerce_text(text, frozenset(types))
    assert coerced == expected
    assert type(coerced) is type(expected)


def test_coerce_scalars_take_one_value() -> None:
    assert coerce_parameter(["7"], param({"integer"})) == 7
    with pytest.raises(ValueError, match="given 2 times"):
        coerce_parameter(["1", "2"], param({"integer"}))
    with pytest.raises(KeyError):
        coerce_parameter([], param({"integer"}))


def test_coerce_arrays() -> None:
    exploded = param({"array"}, {"integer"})
    assert coerce_parameter(["1", "2", "x"], exploded) == [1, 2, "x"]
    flat = param({"array"}, {"integer"}, "query", explode=False)
    assert coerce_parameter(["1,2,3"], flat) == [1, 2, 3]
    assert coerce_parameter([""], flat) == []
    with pytest.raises(ValueError, match="comma-separated"):
        coerce_parameter(["1", "2"], flat)
    path = param({"array"}, {"string"}, "path", explode=False)
    assert coerce_parameter(["a,b"], path) == ["a", "b"]
    header = param({"array"}, {"boolean"}, "header", explode=False)
    assert coerce_parameter(["true, false"], header) == [True, False]


def test_coerced_values_against_the_compiled_schema(api30: OpenApiDocument) -> None:
    classify = operation(api30, "POST", "/v1/classify")
    ids = parameter(classify, "ids")
    schema = validator(api30, ids.schema)
    assert schema.is_valid(coerce_parameter(["1,2"], ids))
    assert not schema.is_valid(coerce_parameter(["1,0"], ids))
    assert not schema.is_valid(coerce_parameter(["1,2.5"], ids))


def test_types_come_from_enum_const_and_combinators(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "openapi.yaml": """
            openapi: 3.1.0
            paths:
              /x:
                get:
                  parameters:
                    - {name: a, in: query, schema: {enum: [1, 2]}}
                    - {name: b, in: query, schema: {const: true}}
                    - {name: c, in: query, schema: {allOf: [{type: number}, {minimum: 1}]}}
                    - {name: d, in: query, schema: {anyOf: [{type: integer}, {type: "null"}]}}
                    - {name: e, in: query, schema: {anyOf: [{type: integer}, {minimum: 1}]}}
                    - {name: f, in: query, schema: {allOf: [{type: number}, {type: integer}]}}
                    - {name: g, in: query, schema: {$ref: '#/components/schemas/G'}}
                    - {name: h, in: query, schema: true}
            components:
              schemas:
                G: {type: array, items: {$ref: '#/components/schemas/Item'}}
                Item: {type: boolean}
            """
        },
    )
    (op,) = load_openapi(tmp_path / "openapi.yaml", tmp_path).operations
    types = {p.name: (set(p.schema_types), set(p.item_types)) for p in op.parameters}
    assert types == {
        "a": ({"integer"}, set()),
        "b": ({"boolean"}, set()),
        "c": ({"number"}, set()),
        "d": ({"integer", "null"}, set()),
        "e": (set(), set()),
        "f": ({"integer"}, set()),
        "g": ({"array"}, {"boolean"}),
        "h": (set(), set()),
    }


# --- problems ------------------------------------------------------------------------------

BROKEN = """
openapi: 3.0.3
paths:
  /ok/{id}:
    get:
      operationId: twice
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
  /ok/{name}:
    get: {}
  no-slash:
    get: {}
  /bad/{open:
    get: {}
  /items/{item}:
    fetch: {}
    get:
      operationId: twice
      parameters:
        - $ref: '#/components/parameters/Missing'
        - {name: extra, in: path, required: false, schema: {type: string}}
        - {name: q, in: body, schema: {type: string}}
        - {name: r, in: query}
        - {name: s, in: query, content: {application/json: {schema: {type: object}}}}
        - {name: t, in: query, style: deepObject, schema: {type: string}}
        - {name: u, in: query, schema: {type: string}}
        - {name: u, in: query, schema: {type: string}}
        - {name: v, in: query, schema: {type: object}}
      requestBody:
        $ref: '#/components/requestBodies/Missing'
    post:
      requestBody:
        content: {}
    put:
      requestBody:
        content:
          json: {schema: {type: object}}
"""


def test_every_problem_is_reported_with_its_location(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, BROKEN)
    expected = [
        ("/paths/~1ok~1{name}", "the same path as '/ok/{id}'"),
        ("/paths/~1ok~1{name}/get", "path parameter {name} of the template is not declared"),
        ("/paths/no-slash", "starts with '/'"),
        ("/paths/~1bad~1{open", "unbalanced"),
        ("/paths/~1items~1{item}/fetch", "'fetch' is neither an HTTP method"),
        ("/paths/~1items~1{item}/get/operationId", "also the id of /paths/~1ok~1{id}/get"),
        ("/paths/~1items~1{item}/get/parameters/0/$ref", "does not resolve"),
        ("/paths/~1items~1{item}/get/parameters/1", "must have required: true"),
        ("/paths/~1items~1{item}/get", "parameter 'extra' is in: path but not in the template"),
        ("/paths/~1items~1{item}/get", "path parameter {item} of the template is not declared"),
        ("/paths/~1items~1{item}/get/parameters/2", "'in' must be one of"),
        ("/paths/~1items~1{item}/get/parameters/3", "needs a 'schema'"),
        ("/paths/~1items~1{item}/get/parameters/4", "'content' are not supported"),
        ("/paths/~1items~1{item}/get/parameters/5", "style 'deepObject' is not supported"),
        ("/paths/~1items~1{item}/get/parameters/7", "parameter 'u' in query is repeated"),
        ("/paths/~1items~1{item}/get/parameters/8/schema", "object-valued"),
        ("/paths/~1items~1{item}/get/requestBody/$ref", "does not resolve"),
        ("/paths/~1items~1{item}/post", "path parameter {item} of the template is not declared"),
        ("/paths/~1items~1{item}/post/requestBody", "at least one media range"),
        ("/paths/~1items~1{item}/put", "path parameter {item} of the template is not declared"),
        ("/paths/~1items~1{item}/put/requestBody/content/json", "not a media range"),
    ]
    for location, words in expected:
        assert has(problems, location, words), (location, words, problems)
    assert len(problems) == len(expected), problems


@pytest.mark.parametrize(
    ("document", "location", "words"),
    [
        ("- a list", "(top level)", "is a mapping"),
        ("openapi: 3.0\npaths: {}", "/openapi", "3.0.x or 3.1.x, as a string, not 3.0"),
        ("openapi: '3.2.0'\npaths: {}", "/openapi", "3.0.x or 3.1.x"),
        ("paths: {}", "(top level)", "'openapi' must be"),
        ("swagger: '2.0'\npaths: {}", "/swagger", "Swagger 2.0"),
        ("openapi: 3.0.0", "(top level)", "'paths' must map"),
        ("openapi: 3.0.0\npaths: []", "(top level)", "'paths' must map"),
        ("openapi: 3.0.0\nservers: {url: /}\npaths: {}", "/servers", "is a list"),
        ("openapi: 3.0.0\nservers: [{url: '/{v}'}]\npaths: {}", "/servers/0", "no default"),
        (
            "openapi: 3.0.0\npaths: {/x: {get: {parameters: {}}}}",
            "/paths/~1x/get/parameters",
            "is a list",
        ),
        ("openapi: 3.0.0\npaths: {/x: []}", "/paths/~1x", "a path item is a mapping"),
        ("openapi: 3.0.0\npaths: {/x: {get: []}}", "/paths/~1x/get", "an operation is a mapping"),
        (
            "openapi: 3.0.0\npaths: {/x: {get: {requestBody: {content: {a/b: {}}, required: 1}}}}",
            "/paths/~1x/get/requestBody",
            "'required' is true or false",
        ),
        ("openapi: 3.0.0\npaths: {'/x': {get: {}}}\nopenapi: 3.1.0", "line 3", "duplicate key"),
        ("openapi: 3.0.0\npaths: {/x: {get: {}}", "line 2", "not valid YAML: while parsing"),
    ],
)
def test_document_problems(tmp_path: Path, document: str, location: str, words: str) -> None:
    assert has(problems_of(tmp_path, document), location, words)


def test_a_dangling_ref_in_another_file_names_that_file(tmp_path: Path) -> None:
    document = """
    openapi: 3.1.0
    paths:
      /x:
        get:
          parameters: [{$ref: 'params.yaml#/Limit'}, {$ref: 'params.yaml#/Nope'}]
          requestBody: {$ref: 'bodies.yaml#/Body'}
    """
    problems = problems_of(
        tmp_path,
        document,
        **{
            "params.yaml": "Limit: {$ref: '#/Other'}\n",
            "bodies.yaml": "Body: {content: {application/json: {schema: {type: object}}}}\n",
        },
    )
    assert has(problems, "params.yaml#/Limit/$ref", "'#/Other' does not resolve")
    assert has(problems, "/paths/~1x/get/parameters/1/$ref", "'params.yaml#/Nope'")
    assert len(problems) == 2, problems


def test_circular_parameter_refs(tmp_path: Path) -> None:
    document = """
    openapi: 3.1.0
    paths: {/x: {get: {parameters: [{$ref: '#/components/parameters/A'}]}}}
    components:
      parameters:
        A: {$ref: '#/components/parameters/B'}
        B: {$ref: '#/components/parameters/A'}
    """
    assert has(problems_of(tmp_path, document), "/components/parameters/B/$ref", "circular")


# --- files: the policy directory is the boundary ---------------------------------------------


def test_a_ref_escaping_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "policy"
    write(tmp_path, {"secret.json": '{"type": "string"}'})
    document = """
    openapi: 3.1.0
    paths:
      /x:
        post:
          requestBody:
            content:
              application/json: {schema: {$ref: '../secret.json'}}
    """
    write(root, {"openapi.yaml": document})
    with pytest.raises(OpenApiError) as caught:
        load_openapi(root / "openapi.yaml", root)
    ((where, message),) = caught.value.problems
    assert where == "/paths/~1x/post/requestBody/content/application~1json/schema/$ref"
    assert "outside the policy directory" in message


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "policy"
    write(tmp_path, {"secret.json": '{"type": "string"}'})
    write(root, {"schema.json": '{"$ref": "link.json"}'})
    (root / "link.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(SchemaFileError, match="outside the policy directory") as caught:
        collect_resources(root / "schema.json", root)
    assert caught.value.file == root / "schema.json"
    assert caught.value.pointer == "/$ref"
    (root / "entry.json").symlink_to(tmp_path / "secret.json")
    with pytest.raises(SchemaFileError, match="outside the policy directory"):
        collect_resources(root / "entry.json", root)


def test_remote_refs_are_refused(tmp_path: Path) -> None:
    document = """
    openapi: 3.1.0
    paths:
      /x:
        post:
          requestBody:
            content:
              application/json: {schema: {$ref: 'https://example.com/schema.json#/a'}}
    """
    ((where, message),) = problems_of(tmp_path, document)
    assert where == "/paths/~1x/post/requestBody/content/application~1json/schema/$ref"
    assert "remote references are not fetched" in message
    document = "openapi: 3.1.0\npaths: {/x: {get: {parameters: [$ref: 'http://h/p.yaml']}}}"
    ((where, message),) = problems_of(tmp_path, document)
    assert where == "/paths/~1x/get/parameters/0/$ref"
    assert "remote references are not fetched" in message
    write(tmp_path, {"remote.json": '{"items": {"$ref": "http://example.com/x.json"}}'})
    with pytest.raises(SchemaFileError, match="remote references are not fetched"):
        collect_resources(tmp_path / "remote.json", tmp_path)


def test_a_ref_to_a_declared_id_is_not_remote(tmp_path: Path) -> None:
    schema = {
        "$defs": {"id": {"$id": "urn:example:id", "type": "integer"}},
        "properties": {"a": {"$ref": "urn:example:id"}, "b": {"$ref": "https://x.test/s#/a"}},
    }
    write(tmp_path, {"s.json": json.dumps(schema), "t.json": '{"$id": "https://x.test/s"}'})
    with pytest.raises(SchemaFileError, match=r"'https://x\.test/s#/a': remote references"):
        collect_resources(tmp_path / "s.json", tmp_path)
    schema["properties"] = {"a": {"$ref": "urn:example:id"}}
    write(tmp_path, {"s.json": json.dumps(schema)})
    resources = collect_resources(tmp_path / "s.json", tmp_path)
    registry = jsonschema_rs.Registry(list(resources.items()))
    compiled = jsonschema_rs.validator_for(
        {"$ref": file_uri(tmp_path / "s.json")}, registry=registry, offline=True
    )
    assert not compiled.is_valid({"a": "x"})


def test_a_missing_file_names_the_referring_file_and_ref(tmp_path: Path) -> None:
    write(tmp_path, {"schemas/a.yaml": "properties: {b: {$ref: './nope.yaml#/x'}}\n"})
    with pytest.raises(SchemaFileError) as caught:
        collect_resources(tmp_path / "schemas/a.yaml", tmp_path)
    assert caught.value.file == tmp_path / "schemas/a.yaml"
    assert caught.value.pointer == "/properties/b/$ref"
    assert "'./nope.yaml#/x'" in caught.value.message
    assert str(tmp_path / "schemas/nope.yaml") in caught.value.message


def test_collected_files_compile_with_relative_refs(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "schemas/entry.json": json.dumps(
                {
                    "type": "object",
                    "properties": {
                        "a": {"$ref": "defs.json#/$defs/name"},
                        "b": {"$ref": "./common/types.yaml"},
                        "c": {"$ref": "../shared.json"},
                        "d": {"$ref": "#/$defs/local"},
                        "e": {"enum": [{"$ref": "not-a-file.json"}]},
                    },
                    "$defs": {"local": {"type": "boolean"}},
                }
            ),
            "schemas/defs.json": '{"$defs": {"name": {"type": "string", "minLength": 2}}}',
            "schemas/common/types.yaml": "type: integer\nmaximum: 9\n",
            "shared.json": '{"$ref": "schemas/defs.json#/$defs/name"}',
        },
    )
    seen: list[Any] = []

    def transform(document: Any) -> Any:
        seen.append(document)
        return document

    resources = collect_resources(tmp_path / "schemas/entry.json", tmp_path, transform)
    assert set(resources) == {
        file_uri(tmp_path / name)
        for name in ("schemas/entry.json", "schemas/defs.json", "schemas/common/types.yaml")
    } | {file_uri(tmp_path / "shared.json")}
    assert len(seen) == 4
    registry = jsonschema_rs.Registry(list(resources.items()))
    compiled = jsonschema_rs.validator_for(
        {"$ref": file_uri(tmp_path / "schemas/entry.json")},
        registry=registry,
        offline=True,
        validate_formats=True,
    )
    assert compiled.is_valid({"a": "ab", "b": 9, "c": "cd", "d": True})
    for wrong in ({"a": "x"}, {"b": 10}, {"c": "x"}, {"d": 1}):
        assert not compiled.is_valid(wrong), wrong


# --- reading one file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "line", "words"),
    [
        ("a.json", '{"a": 1, "a": 2}', None, "duplicate key 'a'"),
        ("a.json", '{"a": NaN}', None, "NaN is not a JSON number"),
        ("a.json", '{"a": 1e999}', None, "inf is not a JSON number"),
        ("a.json", '{"a": 1,\n}', 2, "not valid JSON"),
        ("a.yaml", "a: 1\na: 2\n", 2, "duplicate key 'a'"),
        ("a.yml", "a: [1\n", 2, "not valid YAML"),
        ("a.yaml", "a: !!binary aGk=\n", None, "bytes is not JSON data"),
        ("a.yaml", "a: &x [*x]\n", None, "refers to its own ancestor"),
        ("a.yaml", "{[1]: 2}\n", 1, "not valid YAML: .*unhashable key"),
        ("a.yaml", "1.5: x\n", None, "key 1.5 is not a string"),
        ("a.txt", "{}", None, "not a .json, .yaml or .yml file"),
    ],
)
def test_unusable_files(tmp_path: Path, name: str, text: str, line: int | None, words: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(SchemaFileError, match=words.replace("(", r"\(")) as caught:
        load_document(tmp_path / name)
    assert caught.value.line == line
    assert caught.value.file == tmp_path / name


def test_yaml_becomes_plain_json_data(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "responses: {200: {description: ok}}\nwhen: 2024-01-01\nshared: &s {a: 1}\nagain: *s\n",
        encoding="utf-8",
    )
    document = load_document(tmp_path / "a.yaml")
    assert document == {
        "responses": {"200": {"description": "ok"}},
        "when": "2024-01-01",
        "shared": {"a": 1},
        "again": {"a": 1},
    }
    assert document["shared"] is not document["again"]
