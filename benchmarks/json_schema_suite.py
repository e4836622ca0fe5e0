"""Why request validation uses jsonschema-rs: correctness and speed, measured on this machine.

Runs the official JSON-Schema-Test-Suite (the copy shipped in the ``jsonschema`` 4.23.0
sdist, downloaded from PyPI) against jsonschema-rs, python-jsonschema and, when
installed, fastjsonschema: the required tests of draft7 and draft2020-12, remote refs
served from the suite's ``remotes/`` without network, then the optional format tests
this service relies on (email, uri, date-time, uuid) with format assertion on. Then
times ``is_valid`` on a typical chat-completions body against a 2020-12 schema.

    .venv/bin/python -m benchmarks.json_schema_suite
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag

import jsonschema
import jsonschema_rs
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7, DRAFT202012

SUITE = "jsonschema==4.23.0"
DRAFTS = ("draft7", "draft2020-12")
FORMATS = ("email", "uri", "date-time", "uuid")
REMOTE = "http://localhost:1234/"
DRAFT7_URI = "http://json-schema.org/draft-07/schema#"

IsValid = Callable[[Any], bool]
Compile = Callable[[Any, str, bool], IsValid]
"""(schema, draft, assert formats) -> is_valid."""


@dataclass
class Candidate:
    name: str
    compile: Compile
    drafts: tuple[str, ...] = DRAFTS


@dataclass
class Score:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    bad_files: Counter[str] = field(default_factory=Counter)

    def cell(self) -> str:
        total = self.passed + self.failed + self.errors
        return f"{self.passed}/{total}" + (f" ({self.errors} err)" if self.errors else "")


def fetch_suite(tmp: Path) -> Path:
    """The suite's ``json/`` directory, from the sdist on PyPI; exits 2 if it can't be had."""
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    done = subprocess.run([*argv, SUITE, "-d", str(tmp)], capture_output=True, text=True)
    sdists = sorted(tmp.glob("jsonschema-*.tar.gz"))
    if done.returncode != 0 or not sdists:
        print(f"cannot download the {SUITE} sdist from PyPI:\n{done.stderr.strip()}")
        sys.exit(2)
    with tarfile.open(sdists[0]) as archive:
        archive.extractall(tmp, filter="data")
    return next(tmp.glob("jsonschema-*/json"))


def load_remotes(root: Path, draft: str) -> dict[str, Any]:
    """``{http://localhost:1234/...: schema}``: shared remotes plus this draft's folder."""
    remotes: dict[str, Any] = {}
    for path in sorted((root / "remotes").rglob("*.json")):
        rel = path.relative_to(root / "remotes")
        if len(rel.parts) > 1 and rel.parts[0].startswith("draft") and rel.parts[0] != draft:
            continue
        remotes[REMOTE + rel.as_posix()] = json.loads(path.read_text())
    return remotes


def rust_registry(remotes: dict[str, Any], draft: int) -> jsonschema_rs.Registry:
    """jsonschema-rs resolves every ``$ref`` of every resource when the registry is built,
    so one remote meant for later drafts (a ``$ref`` into ``$defs``) sinks it in draft 7:
    drop that one remote and say so (no test of that draft uses it)."""
    try:
        return jsonschema_rs.Registry(remotes.items(), draft=draft)
    except ValueError as exc:
        for uri in remotes:
            rest = [(u, s) for u, s in remotes.items() if u != uri]
            try:
                registry = jsonschema_rs.Registry(rest, draft=draft)
            except ValueError:
                continue
            print(f"note: jsonschema-rs registry (draft {draft}) without {uri}: {exc}")
            return registry
        raise


def rust(remotes: dict[str, dict[str, Any]]) -> Candidate:
    classes = {
        "draft7": jsonschema_rs.Draft7Validator,
        "draft2020-12": jsonschema_rs.Draft202012Validator,
    }
    ids = {"draft7": jsonschema_rs.Draft7, "draft2020-12": jsonschema_rs.Draft202012}
    registries = {d: rust_registry(remotes[d], ids[d]) for d in DRAFTS}

    def compile_(schema: Any, draft: str, formats: bool) -> IsValid:
        cls = classes[draft]
        return cls(
            schema, validate_formats=formats, registry=registries[draft], offline=True
        ).is_valid

    return Candidate(f"jsonschema-rs {version('jsonschema-rs')}", compile_)


def python(remotes: dict[str, dict[str, Any]]) -> Candidate:
    classes = {
        "draft7": jsonschema.Draft7Validator,
        "draft2020-12": jsonschema.Draft202012Validator,
    }
    specs = {"draft7": DRAFT7, "draft2020-12": DRAFT202012}
    registries = {
        d: Registry().with_resources(
            (uri, Resource.from_contents(s, default_specification=specs[d]))
            for uri, s in remotes[d].items()
        )
        for d in DRAFTS
    }

    def compile_(schema: Any, draft: str, formats: bool) -> IsValid:
        cls = classes[draft]
        checker = cls.FORMAT_CHECKER if formats else None
        return cls(schema, registry=registries[draft], format_checker=checker).is_valid

    return Candidate(f"jsonschema {version('jsonschema')}", compile_)


def fast(remotes: dict[str, dict[str, Any]]) -> Candidate | None:
    """Draft-07 only: it has no 2020-12 support (a schema without ``$schema`` gets its
    draft-07-based default, so draft 7 is forced here)."""
    try:
        lib: Any = importlib.import_module("fastjsonschema")
    except ImportError:
        return None

    served = {urldefrag(DRAFT7_URI).url: jsonschema.Draft7Validator.META_SCHEMA}
    served.update(remotes["draft7"])

    def fetch(uri: str) -> Any:
        return served[urldefrag(uri).url]  # a KeyError, never the network

    def compile_(schema: Any, draft: str, formats: bool) -> IsValid:
        if isinstance(schema, dict) and "$schema" not in schema:
            schema = {**schema, "$schema": DRAFT7_URI}
        handlers = {"http": fetch, "https": fetch}
        check = lib.compile(schema, handlers=handlers, use_formats=formats, use_default=False)

        def is_valid(data: Any) -> bool:
            try:
                check(data)
            except lib.JsonSchemaValueException:
                return False
            return True

        return is_valid

    return Candidate(f"fastjsonschema {version('fastjsonschema')}", compile_, ("draft7",))


def suite_files(root: Path, draft: str, formats: bool) -> list[Path]:
    tests = root / "tests" / draft
    if not formats:
        return sorted(tests.glob("*.json"))
    paths = (tests / "optional" / "format" / f"{name}.json" for name in FORMATS)
    return [path for path in paths if path.exists()]


def run(candidate: Candidate, files: list[Path], draft: str, formats: bool) -> Score:
    """Pass: ``is_valid(data) == valid``; error: an exception compiling or validating."""
    score = Score()
    for path in files:
        for group in json.loads(path.read_text()):
            try:
                is_valid = candidate.compile(group["schema"], draft, formats)
            except Exception:
                score.errors += len(group["tests"])
                score.bad_files[path.name] += len(group["tests"])
                continue
            for test in group["tests"]:
                try:
                    ok = is_valid(test["data"]) == test["valid"]
                except Exception:
                    score.errors += 1
                    score.bad_files[path.name] += 1
                    continue
                score.passed += ok
                score.failed += not ok
                if not ok:
                    score.bad_files[path.name] += 1
    return score


CHAT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["model", "messages"],
    "additionalProperties": False,
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "max_tokens": {"type": "integer", "minimum": 1},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "messages": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "additionalProperties": False,
                "properties": {
                    "role": {"enum": ["system", "user", "assistant", "tool"]},
                    "content": {"type": "string"},
                },
            },
        },
    },
}
CHAT_BODY: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "max_tokens": 512,
    "temperature": 0.2,
    "messages": [
        {
            "role": "system",
            "content": "You are a careful assistant for an internal engineering team. Answer "
            "concisely, cite the file and line when you refer to code, say so when you are "
            "not sure, and never include credentials, tokens or personal data in answers. "
            "Prefer short code samples over long explanations, and when a question is "
            "ambiguous, state the assumption you made in one sentence before answering. "
            "Use metric units, ISO 8601 dates and British spelling throughout.",
        },
        {
            "role": "user",
            "content": "Our Envoy ext_authz service validates every JSON request body against "
            "a JSON Schema before it reaches the model server. Requests are small, a kilobyte "
            "or two, but there are many thousands per second and the check sits on the hot "
            "path of every call. Which properties of the validator matter most here, and how "
            "should we measure them? Please compare compliance with the official test suite, "
            "latency per validation for a compiled schema, and what happens with remote "
            "references. Then give a short checklist we can apply when we upgrade the library "
            "or change the schema, with one line per item and no more than eight items. "
            "Assume Python 3.11, a policy reloaded at runtime and schemas kept in git.",
        },
    ],
}


def per_call_us(is_valid: IsValid) -> float:
    """Best of 7 batches, like ``timeit.repeat``, in microseconds per call."""
    robot = {**CHAT_BODY, "messages": [{"role": "robot", "content": "hi"}]}
    if not is_valid(CHAT_BODY) or is_valid(robot):
        raise SystemExit("a candidate gets the chat schema wrong: no timing to compare")
    timer = timeit.Timer("is_valid(body)", globals={"is_valid": is_valid, "body": CHAT_BODY})
    number, _ = timer.autorange()
    return min(timer.repeat(repeat=7, number=number)) / number * 1e6


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="json-schema-suite-") as tmp:
        root = fetch_suite(Path(tmp))
        remotes = {d: load_remotes(root, d) for d in DRAFTS}
        built = [rust(remotes), python(remotes), fast(remotes)]
        candidates = [c for c in built if c is not None]
        rows: list[list[str]] = []
        failures: list[str] = []
        for c in candidates:
            row = [c.name]
            for formats, draft in ((f, d) for f in (False, True) for d in DRAFTS):
                if draft not in c.drafts:
                    row.append("unsupported")
                    continue
                score = run(c, suite_files(root, draft, formats), draft, formats)
                row.append(score.cell())
                if score.bad_files:
                    bad = ", ".join(f"{n} x{k}" for n, k in sorted(score.bad_files.items()))
                    kind = "format" if formats else "required"
                    failures.append(f"  {c.name}, {draft} {kind}: {bad}")
            rows.append(row)
        timings = [per_call_us(c.compile(CHAT_SCHEMA, "draft2020-12", True)) for c in candidates]
    fastest = min(timings)
    for row, us in zip(rows, timings, strict=True):
        row += [f"{us:.2f}", f"{us / fastest:.1f}x"]
    machine = f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs"
    print(f"JSON-Schema-Test-Suite from the {SUITE} sdist on {machine}")
    print("draft columns: required tests passed/total (err = exception compiling or validating)")
    print(f"format columns: optional/format/{{{','.join(FORMATS)}}}.json, formats asserted")
    print(f"µs: is_valid on a {len(json.dumps(CHAT_BODY))}-byte chat body, 2020-12 schema\n")
    header = ["candidate", "draft7", "draft2020-12", "format d7", "format 2020-12", "µs", "ratio"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    if failures:
        print("\nfailed or errored cases per file:")
        print("\n".join(failures))
    uri_libs = ("rfc3987", "rfc3986_validator")
    if not find_spec("rfc3339_validator") or not any(map(find_spec, uri_libs)):
        print("(python-jsonschema without its format extra: date-time or uri not checked)")
    print(f"\ntotal runtime {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
