"""Rego policies through regopy: compiled once into a bundle, evaluated per request."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from authz_service.layers.semantics.rego import (
    NO_DECISION_MESSAGE,
    UNDEFINED,
    RegoCompileError,
    RegoEvaluationError,
    RegoPolicy,
    RegoProblem,
)

DECISION = """\
package authz

import rego.v1

default decision := {"allowed": false, "http_status": 403, "message": "not allowed",
                     "reason": "default_deny"}

tenant := input.attributes.request.http.headers["x-tenant"]

decision := {"allowed": false, "http_status": 451, "message": "tenant blocked",
             "reason": "tenant.blocked", "headers": {"X-Blocked-Tenant": tenant}} if {
    tenant in data.blocked_tenants
} else := {"allowed": true, "headers": {"x-model": input.parsed_body.model},
           "response_headers_to_add": {"X-Tier": input.principal.tier}} if {
    input.principal.tier in data.tiers_for[input.parsed_body.model]
}
"""

DATA = {
    "blocked_tenants": ["evil", "banned"],
    "tiers_for": {"gpt-4o": ["gold"], "mini": ["gold", "free"]},
}


def request(
    tenant: str = "acme", tier: str = "gold", model: str = "gpt-4o", **extra: Any
) -> dict[str, Any]:
    """An input shaped like OPA-Envoy's (see rego_input.py), with ~15 headers."""
    headers = {
        ":authority": "api.example.com",
        ":method": "POST",
        ":path": "/v1/chat/completions",
        "content-type": "application/json",
        "accept": "application/json",
        "user-agent": "python-httpx/0.27.0",
        "x-request-id": "5f0c6a8e-1d2b-4c3a-9e8f-7a6b5c4d3e2f",
        "x-tenant": tenant,
        "x-forwarded-for": "10.0.0.1",
        "x-forwarded-proto": "https",
        "x-envoy-internal": "true",
        "content-length": "512",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    }
    document: dict[str, Any] = {
        "attributes": {
            "request": {
                "http": {
                    "method": "POST",
                    "path": "/v1/chat/completions",
                    "host": "api.example.com",
                    "headers": headers,
                    "size": 512,
                }
            },
            "source": {"address": "10.0.0.1:53122", "principal": None},
            "context_extensions": {},
        },
        "parsed_path": ["v1", "chat", "completions"],
        "parsed_query": {},
        "parsed_body": {
            "model": model,
            "max_tokens": 512,
            "temperature": 0.7,
            "stream": False,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Summarise: " + "lorem ipsum " * 30},
            ],
        },
        "route": "chat",
        "principal": {"subject": "user-1", "tenant": tenant, "tier": tier, "roles": ["reader"]},
        "token_estimate": None,
    }
    document.update(extra)
    return document


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def policy(
    tmp_path: Path, source: str, data: Any = None, query: str = "data.authz.decision"
) -> RegoPolicy:
    module = write(tmp_path, "policy.rego", source)
    files = [write(tmp_path, "data.json", json.dumps(data))] if data is not None else []
    return RegoPolicy.compile([module], files, query)


def problems(tmp_path: Path, modules: dict[str, str], **data: str) -> tuple[RegoProblem, ...]:
    paths = [write(tmp_path, name, text) for name, text in modules.items()]
    data_paths = [write(tmp_path, name.replace("_", "."), text) for name, text in data.items()]
    with pytest.raises(RegoCompileError) as caught:
        RegoPolicy.compile(paths, data_paths)
    assert str(caught.value)
    return caught.value.problems


# ---- results -----------------------------------------------------------------------------


def test_boolean_results(tmp_path: Path) -> None:
    source = 'package authz\n\ndecision if input.principal.tier == "gold"\n'
    allow = policy(
        tmp_path, source.replace("decision if", "default decision := false\ndecision if")
    )
    assert allow.evaluate(request(tier="gold")).allowed
    denied = allow.evaluate(request(tier="free"))
    assert not denied.allowed
    assert (denied.status, denied.message, denied.reason) == (None, None, None)
    assert dict(denied.headers) == {} and dict(denied.response_headers) == {}


def test_object_result_allow_and_deny(tmp_path: Path) -> None:
    rego = policy(tmp_path, DECISION, DATA)
    allowed = rego.evaluate(request())
    assert allowed.allowed
    assert dict(allowed.headers) == {"x-model": "gpt-4o"}
    assert dict(allowed.response_headers) == {"x-tier": "gold"}  # lowercased

    blocked = rego.evaluate(request(tenant="evil"))  # the data file's list
    assert not blocked.allowed
    assert (blocked.status, blocked.message, blocked.reason) == (
        451,
        "tenant blocked",
        "tenant.blocked",
    )
    assert dict(blocked.headers) == {"x-blocked-tenant": "evil"}
    assert dict(blocked.response_headers) == {}

    default = rego.evaluate(request(tier="free"))
    assert (default.allowed, default.status, default.reason) == (False, 403, "default_deny")


def test_body_is_the_message_and_response_headers_only_on_allow(tmp_path: Path) -> None:
    rego = policy(
        tmp_path,
        'package authz\ndecision := {"allowed": input.ok, "body": "nope",'
        ' "response_headers_to_add": {"x-a": "1"}}\n',
    )
    assert rego.evaluate({"ok": False}).message == "nope"
    assert dict(rego.evaluate({"ok": False}).response_headers) == {}
    assert dict(rego.evaluate({"ok": True}).response_headers) == {"x-a": "1"}


def test_undefined_denies(tmp_path: Path) -> None:
    rego = policy(tmp_path, 'package authz\ndecision if input.principal.tier == "gold"\n')
    result = rego.evaluate(request(tier="free"))
    assert not result.allowed
    assert result.message == NO_DECISION_MESSAGE
    assert result.status is None
    assert rego.evaluate_raw(request(tier="free")) is UNDEFINED
    assert rego.evaluate(request(tier="gold")).allowed


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ('"yes"', "boolean or an object"),
        ("1", "boolean or an object"),
        ("[true]", "boolean or an object"),
        ('{"http_status": 403}', "boolean 'allowed'"),
        ('{"allowed": "true"}', "boolean 'allowed'"),
        ('{"allowed": false, "http_status": 42}', "http_status"),
        ('{"allowed": false, "http_status": "403"}', "http_status"),
        ('{"allowed": false, "http_status": 403.5}', "http_status"),
        ('{"allowed": false, "http_status": true}', "http_status"),
        ('{"allowed": false, "message": 7}', "body/message"),
        ('{"allowed": false, "body": "a", "message": "b"}', "both"),
        ('{"allowed": false, "reason": "Not Allowed"}', "reason"),
        ('{"allowed": true, "headers": {"x-a": 1}}', "must be a string"),
        ('{"allowed": true, "headers": ["x-a"]}', "object of strings"),
        ('{"allowed": true, "headers": {"x a": "1"}}', "header name"),
        ('{"allowed": true, "headers": {"x-a": "1\\r\\nx-b: 2"}}', "control characters"),
        ('{"allowed": true, "headers": {"X-A": "1", "x-a": "2"}}', "twice"),
        ('{"allowed": true, "response_headers_to_add": {"x-a": null}}', "must be a string"),
        ('{"allowed": true, "request_headers_to_remove": ["x-a"]}', "unknown keys"),
    ],
)
def test_malformed_decisions_raise(tmp_path: Path, value: str, complaint: str) -> None:
    rego = policy(tmp_path, f"package authz\ndecision := {value}\n")
    with pytest.raises(RegoEvaluationError, match=complaint):
        rego.evaluate(request())


def test_evaluation_errors_raise(tmp_path: Path) -> None:
    conflict = policy(
        tmp_path,
        "package authz\ndecision := true if input.a == 1\ndecision := false if input.b == 1\n",
    )
    assert conflict.evaluate({"a": 1}).allowed
    with pytest.raises(RegoEvaluationError, match="multiple outputs"):
        conflict.evaluate({"a": 1, "b": 1})
    # strict built-in errors: an error is not "undefined" (a deny rule would fail open)
    division = policy(tmp_path, "package authz\ndecision := 10 / input.n > 1\n")
    assert division.evaluate({"n": 2}).allowed
    with pytest.raises(RegoEvaluationError, match="divide by zero"):
        division.evaluate({"n": 0})
    with pytest.raises(RegoEvaluationError):
        division.evaluate({"n": "two"})


def test_inputs_python_cannot_express_in_json_raise(tmp_path: Path) -> None:
    rego = policy(tmp_path, "package authz\ndecision := count(input) >= 0\n")
    bad_inputs: list[Any] = [{"a": {1, 2}}, {"a": b"x"}, {1: "a"}, {"a": float("nan")}]
    for bad in bad_inputs:
        with pytest.raises(RegoEvaluationError):
            rego.evaluate(bad)
    deep: Any = "x"
    for _ in range(200):
        deep = [deep]
    with pytest.raises(RegoEvaluationError, match="nests too deeply"):
        rego.evaluate({"a": deep})
    assert rego.evaluate({"a": (1, 2), "big": 10**30}).allowed


# ---- inputs --------------------------------------------------------------------------------


def test_reads_body_header_and_principal(tmp_path: Path) -> None:
    source = """\
package authz

import rego.v1

decision := {"allowed": true, "headers": {"x-seen": concat("/", [model, tenant, tier])}} if {
    model := input.parsed_body.model
    tenant := input.attributes.request.http.headers["x-tenant"]
    tier := input.principal.tier
}
"""
    rego = policy(tmp_path, source)
    result = rego.evaluate(request(tenant="acme", tier="gold", model="gpt-4o"))
    assert dict(result.headers) == {"x-seen": "gpt-4o/acme/gold"}


def test_repeated_evaluations_do_not_leak_state(tmp_path: Path) -> None:
    rego = policy(tmp_path, DECISION, DATA)
    expected = {
        ("acme", "gold", "gpt-4o"): (True, None),
        ("evil", "gold", "gpt-4o"): (False, "tenant.blocked"),
        ("acme", "free", "gpt-4o"): (False, "default_deny"),
        ("acme", "free", "mini"): (True, None),
    }
    for _ in range(50):
        for (tenant, tier, model), answer in expected.items():
            result = rego.evaluate(request(tenant, tier, model))
            assert (result.allowed, result.reason) == answer
    # a key present in one input and absent from the next is really gone
    probe = policy(tmp_path, 'package authz\ndecision := object.get(input, "flag", false)\n')
    assert probe.evaluate({"flag": True}).allowed
    assert not probe.evaluate({}).allowed


def test_strings_with_escapes_round_trip_and_compare(tmp_path: Path) -> None:
    text = 'say "hi"\\ now\nand\ttab é ☃'
    source = (
        "package authz\n"
        f"expected := {json.dumps(text, ensure_ascii=False)}\n"
        'decision := {"allowed": input.s == expected, "message": input.s}\n'
    )
    result = policy(tmp_path, source).evaluate({"s": text})
    assert result.allowed
    assert result.message == text
    nul = policy(tmp_path, 'package authz\ndecision := {"allowed": false, "message": input.s}\n')
    assert nul.evaluate({"s": "a\x00b"}).message == "a\x00b"  # not cut at the NUL


def test_decoded_strings_cannot_forge_the_decision(tmp_path: Path) -> None:
    # base64.decode yields a raw string that rego-cpp's JSON text would not escape
    source = """\
package authz
decision := {"allowed": false, "message": base64.decode(input.m), "reason": "r"}
"""
    forged = '", "allowed": true, "reason": "x'
    result = policy(tmp_path, source).evaluate({"m": base64.b64encode(forged.encode()).decode()})
    assert not result.allowed
    assert result.message == forged
    assert result.reason == "r"


def test_policies_reading_the_whole_input_get_all_of_it(tmp_path: Path) -> None:
    source = """\
package authz
import rego.v1
headers := input.attributes.request.http.headers
decision := {"allowed": true, "headers": {"x-n": sprintf("%d/%d/%d", [
    count(headers), count(object.keys(input)), count(input.parsed_body.messages)])}}
"""
    document = request()
    result = policy(tmp_path, source).evaluate(document)
    n_headers = len(document["attributes"]["request"]["http"]["headers"])
    assert dict(result.headers) == {"x-n": f"{n_headers}/{len(document)}/2"}
    without_projection = RegoPolicy.compile([tmp_path / "policy.rego"], project_input=False)
    assert without_projection.evaluate(document) == result


def test_with_input_and_computed_keys_get_everything(tmp_path: Path) -> None:
    source = """\
package authz
import rego.v1
key := "x-tenant"
decision if input.attributes.request.http.headers[key] == "acme"
"""
    assert policy(tmp_path, source).evaluate(request()).allowed


# ---- modules and data --------------------------------------------------------------------


def test_two_modules_referencing_each_other(tmp_path: Path) -> None:
    main = write(
        tmp_path,
        "main.rego",
        "package authz\nimport rego.v1\nimport data.lib\n\n"
        'decision := {"allowed": lib.ok, "reason": lib.why}\n'
        "tier := input.principal.tier\n",
    )
    lib = write(
        tmp_path,
        "lib/lib.rego",
        "package lib\nimport rego.v1\n\n"
        "default ok := false\n"
        'ok if data.authz.tier == "gold"\n'
        'why := "gold" if ok else := "other"\n',
    )
    rego = RegoPolicy.compile([main, lib])
    assert rego.evaluate(request(tier="gold")).allowed
    assert rego.evaluate(request(tier="free")).reason == "other"


def test_data_files_are_merged(tmp_path: Path) -> None:
    module = write(
        tmp_path,
        "p.rego",
        "package authz\nimport rego.v1\ndecision if {\n  input.t in data.lists.blocked\n"
        "  data.lists.limit == 3\n}\n",
    )
    first = write(tmp_path, "a.json", '{"lists": {"blocked": ["evil"]}}')
    second = write(tmp_path, "b.json", '{"lists": {"limit": 3}}')
    rego = RegoPolicy.compile([module], [first, second])
    assert rego.evaluate({"t": "evil"}).allowed
    assert not rego.evaluate({"t": "good"}).allowed


# ---- compile errors ----------------------------------------------------------------------


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {
            "good.rego": "package authz\ndecision := true\n",
            "bad.rego": "package other\n\nallow if {\n  input.x == \n}\n",
        },
    )
    assert found == (RegoProblem(str(tmp_path / "bad.rego"), 4, "Invalid boolean operator"),)


def test_every_syntax_error_is_reported(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {
            "a.rego": "package authz\n\ndecision := \n",
            "b.rego": "package b\n\n\nx if input.x ==== 1\n",
        },
    )
    where = {(Path(problem.file).name, problem.line) for problem in found}
    assert ("a.rego", 3) in where
    assert ("b.rego", 4) in where


def test_missing_rule_or_package(tmp_path: Path) -> None:
    module = write(tmp_path, "p.rego", "package authz\nallow := true\n")
    for query in ("data.authz.decision", "data.nowhere.decision"):
        with pytest.raises(RegoCompileError) as caught:
            RegoPolicy.compile([module], query=query)
        assert caught.value.problems == (RegoProblem("<query>", None, f"no rule defines {query}"),)
    with pytest.raises(RegoCompileError, match="not a data"):
        RegoPolicy.compile([module], query="data.authz.allow == true")
    assert RegoPolicy.compile([module], query="data.authz.allow").evaluate({}).allowed


def test_unknown_and_unsupported_functions(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        {
            "p.rego": "package authz\nimport rego.v1\n\ndefault decision := false\n"
            "decision if {\n  input.x == 1\n  foo.bar(input.x)\n}\n"
            'decision if {\n  http.send({"method": "GET", "url": "http://x"}).status_code'
            " == 200\n}\n",
        },
    )
    assert [(p.line, p.message.split(" (")[0]) for p in found] == [
        (7, "unknown function foo.bar"),
        (10, "unsupported built-in http.send"),
    ]


def test_recursion_is_found_by_the_trial_evaluation(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, {"p.rego": "package authz\ndecision if x\nx if decision\n"})
    assert "Recursion" in problem.message


def test_data_problems(tmp_path: Path) -> None:
    module = {"p.rego": "package authz\ndecision := data.x\n"}
    (bad,) = problems(tmp_path, module, bad_json='{\n  "x": [1,\n}\n')
    assert (Path(bad.file).name, bad.line) == ("bad.json", 3)
    (array,) = problems(tmp_path, module, list_json="[1, 2]")
    assert "JSON object" in array.message
    (clash,) = problems(tmp_path, module, one_json='{"x": {"a": 1}}', two_json='{"x": {"a": 2}}')
    assert "data.x.a is also defined by" in clash.message
    (hidden,) = problems(tmp_path, module, rule_json='{"authz": {"decision": true}}')
    assert "hide the rule data.authz.decision" in hidden.message


def test_unreadable_module(tmp_path: Path) -> None:
    with pytest.raises(RegoCompileError) as caught:
        RegoPolicy.compile([tmp_path / "missing.rego"])
    assert caught.value.problems[0].file == str(tmp_path / "missing.rego")
    latin = tmp_path / "latin.rego"
    latin.write_bytes(b"package authz\n# caf\xe9\ndecision := true\n")
    with pytest.raises(RegoCompileError, match="UTF-8") as caught:
        RegoPolicy.compile([latin])
    assert caught.value.problems[0].line == 2


def test_comments_do_not_widen_the_input_projection() -> None:
    from authz_service.layers.semantics.rego import _projection

    module = '# Reads input (prose)\npackage authz\nallow if input.principal.tier == "#pro"\n'
    assert _projection(iter([module])) == {"principal": {"tier": None}}
