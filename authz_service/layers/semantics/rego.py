"""Rego policies (OPA-compatible) through regopy, Microsoft's rego-cpp binding.

A policy's modules and data files are compiled once, at policy load, into a bundle (a
plan the rego-cpp VM runs); each request then only sets the ``input`` document and runs
the plan: ~0.2 ms for a ~2 KB input and five rules (each rule or data lookup costs rego-cpp
~15-25 µs), against ~1.7 ms to compile the modules at every query.
:meth:`RegoPolicy.compile` reports every problem it can find with the file and line
(syntax errors, a query that names no rule, calls to functions rego-cpp does not have,
data that cannot be merged), because rego-cpp itself only finds some of them when a
request reaches them.

The query's value decides, like OPA-Envoy's ``allowed``/``http_status``/``body``/
``headers``/``response_headers_to_add`` (see :meth:`RegoPolicy.evaluate`). An undefined
value denies; anything malformed, or an error while evaluating (conflicting outputs, a
built-in called with the wrong types: strict built-in errors are on, so an error never
reads as "undefined" and a ``deny`` rule cannot fail open), raises
:class:`RegoEvaluationError`.

rego-cpp 1.5 quirks this module works around:

- Strings are kept the way they are spelled in JSON, escapes included: ``"a\\"b"`` in a
  module is 4 characters long to ``count``. Input strings are therefore handed over
  JSON-escaped too, so that they compare equal to the same text written in a module
  (but ``count``, ``substring`` and regexes see ``\\n`` as two characters; a ``\\u00e9``
  escape in a module is not equal to ``é``).
- Strings some built-ins produce (``base64.decode``, ``urlquery.decode``…) are raw, and
  the result's JSON text would carry them unescaped (a policy echoing a decoded header
  into its decision could forge fields). The result is read from the result's node tree,
  never from its JSON text.
- ``regoSetInputJSON`` / ``set_input_term`` parse ~2 KB of JSON in ~0.5 ms; building the
  input with the C API's value calls costs about a third of that.
- Data files with the same top-level key are not merged (the first wins silently), a data
  file that is not an object crashes the process, and data silently overrides a rule at
  the same path: data files are merged here, and conflicts are compile errors.
- Errors are printed on stdout unless the interpreter's log level is NONE.
- A bare query whose value is ``false`` answers "undefined" (``default allow := false``
  reads as no decision): the query is run as ``authz_service_result := <query>``.
- Unknown functions and recursion are only reported when evaluation reaches them; saving a
  bundle as JSON corrupts the heap once grpc is loaded (the plan is read from its nodes).
"""

from __future__ import annotations

import ctypes
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import orjson
import regopy  # type: ignore[import-untyped]
from regopy import rego_shared

__all__ = [
    "NO_DECISION_MESSAGE",
    "RegoCompileError",
    "RegoEvaluationError",
    "RegoPolicy",
    "RegoProblem",
    "RegoResult",
]

NO_DECISION_MESSAGE: Final = "the Rego policy returned no decision"
DEFAULT_QUERY: Final = "data.authz.decision"
QUERY_PATTERN: Final = re.compile(r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$")
REASON_PATTERN: Final = re.compile(r"^[a-z0-9_.]+$")
_HEADER_NAME: Final = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_BAD_HEADER_VALUE: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_DECISION_KEYS: Final = frozenset(
    {"allowed", "http_status", "body", "message", "reason", "headers", "response_headers_to_add"}
)
_MAX_DEPTH: Final = 64
"""Nesting deeper than this in the input or the result is refused (recursion guard)."""
_INT64: Final = 1 << 63
_RECOVERABLE_CODES: Final = frozenset(
    {"eval_builtin_error", "eval_conflict_error", "eval_type_error"}
)
"""Runtime error codes an empty trial input may legitimately provoke."""


# ---- public types ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegoProblem:
    """One thing wrong with a policy: where (a module or data file, or ``<query>``) and what."""

    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.message}"


class RegoCompileError(Exception):
    """The policy cannot be used; ``problems`` lists everything found wrong."""

    def __init__(self, problems: Sequence[RegoProblem]) -> None:
        self.problems: tuple[RegoProblem, ...] = tuple(problems)
        super().__init__("; ".join(str(problem) for problem in self.problems))


class RegoEvaluationError(Exception):
    """The policy failed on this input, or returned something that is not a decision."""


@dataclass(frozen=True, slots=True)
class RegoResult:
    allowed: bool
    status: int | None
    """HTTP status for a denial (None: the caller's default, 403)."""
    message: str | None
    """Human message for a denial (the policy's ``body`` or ``message``)."""
    reason: str | None
    """Optional machine code suffix chosen by the policy (``^[a-z0-9_.]+$``)."""
    headers: Mapping[str, str]
    """Headers to add to the upstream request (allowed) or to the denial (denied)."""
    response_headers: Mapping[str, str]
    """Allowed only: headers to add to the client's response (empty on a denial)."""


_NO_HEADERS: Final[Mapping[str, str]] = MappingProxyType({})
_ALLOW: Final = RegoResult(True, None, None, None, _NO_HEADERS, _NO_HEADERS)
_DENY: Final = RegoResult(False, None, None, None, _NO_HEADERS, _NO_HEADERS)
_UNDEFINED_DENY: Final = RegoResult(
    False, None, NO_DECISION_MESSAGE, None, _NO_HEADERS, _NO_HEADERS
)


# ---- the C API, typed --------------------------------------------------------------------

_C: Any = rego_shared.rego
"""The ctypes library; regopy has declared every function's argument and result types."""

_new_input: Callable[[], int] = _C.regoNewInput
_free_input: Callable[[int], None] = _C.regoFreeInput
_input_string: Callable[[int, bytes], int] = _C.regoInputString
_input_int: Callable[[int, int], int] = _C.regoInputInt
_input_float: Callable[[int, float], int] = _C.regoInputFloat
_input_bool: Callable[[int, bool], int] = _C.regoInputBoolean
_input_null: Callable[[int], int] = _C.regoInputNull
_input_item: Callable[[int], int] = _C.regoInputObjectItem
_input_object: Callable[[int, int], int] = _C.regoInputObject
_input_array: Callable[[int, int], int] = _C.regoInputArray
_set_input: Callable[[int, int], int] = _C.regoSetInput
_bundle_query: Callable[[int, int], int | None] = _C.regoBundleQuery
_free_output: Callable[[int], None] = _C.regoFreeOutput
_output_node: Callable[[int], int | None] = _C.regoOutputNode
_node_type: Callable[[int], int] = _C.regoNodeType
_node_size: Callable[[int], int] = _C.regoNodeSize
_node_get: Callable[[int, int], int | None] = _C.regoNodeGet
_node_value: Callable[[int], str] = rego_shared.rego_node_value
_last_error: Callable[[int], str] = rego_shared.rego_get_error

# rego-cpp node kinds (regopy.NodeKind)
_TERM, _SCALAR, _ARRAY, _SET, _OBJECT, _OBJECT_ITEM = 1002, 1003, 1004, 1005, 1006, 1007
_INT, _FLOAT, _STRING, _TRUE, _FALSE, _NULL, _UNDEFINED = 1008, 1009, 1010, 1011, 1012, 1013, 1014
_BINDINGS, _RESULTS = 1016, 1017
_ERROR, _ERROR_MESSAGE, _ERROR_CODE, _ERROR_SEQ = 1800, 1801, 1803, 1804

_UNDEFINED_VALUE: Final[Any] = object()
_RESULT_VAR: Final = "authz_service_result"
"""The query is built as ``authz_service_result := <query>``: rego-cpp answers a bare
query whose value is ``false`` with "undefined" (a failed expression)."""


def _interpreter(strict_builtin_errors: bool) -> Any:
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE  # otherwise errors are printed on stdout
    interpreter.strict_built_in_errors = strict_builtin_errors
    return interpreter


# ---- the policy --------------------------------------------------------------------------


class RegoPolicy:
    """A compiled policy: build with :meth:`compile`, then :meth:`evaluate` per request.

    Not thread-safe (one interpreter holds the input between set and query); fine on one
    asyncio loop, since :meth:`evaluate` never awaits.
    """

    __slots__ = ("_bundle", "_handle", "_interpreter", "_projection", "_query", "modules")

    def __init__(
        self,
        bundle: Any,
        query: str,
        modules: tuple[Path, ...],
        strict: bool,
        projection: _Projection | None,
    ) -> None:
        self._bundle = bundle  # keeps the compiled plan alive
        self._interpreter = _interpreter(strict)
        self._handle: tuple[int, int] = (self._interpreter._impl, bundle._impl)
        self._query = query
        self._projection = projection
        self.modules = modules

    @property
    def query(self) -> str:
        return self._query

    def reads(self, key: str) -> bool:
        """Whether the modules may read ``input.<key>`` (so that what costs work to compute,
        such as the token estimate, is only computed for policies that use it)."""
        return self._projection is None or key in self._projection

    @classmethod
    def compile(
        cls,
        modules: Sequence[Path],
        data_files: Sequence[Path] = (),
        query: str = DEFAULT_QUERY,
        *,
        strict_builtin_errors: bool = True,
        project_input: bool = True,
    ) -> RegoPolicy:
        """Compile ``modules`` (Rego v1 or v0 syntax) and ``data_files`` (JSON objects,
        merged into ``data``) into a bundle answering ``query`` (``data.<package>.<rule>``).

        Raises :class:`RegoCompileError` listing every problem found: unreadable files,
        syntax errors (file and line), data files that conflict with each other or with a
        rule, calls to unknown or unsupported functions (``http.send``, ``net.*``…), a
        query naming no rule, and structural errors (recursion…) a trial evaluation
        against an empty input finds.
        """
        problems: list[RegoProblem] = []
        if not QUERY_PATTERN.match(query):
            problems.append(
                RegoProblem("<query>", None, f"{query!r} is not a data.<package>.<rule> reference")
            )
        if not modules:
            problems.append(
                RegoProblem("<modules>", None, "a Rego policy needs at least one module")
            )
        sources = [source for path in modules if (source := _read_module(path, problems))]
        data = _merge_data(data_files, problems)
        if problems:
            raise RegoCompileError(problems)
        compiler = _Compiler(sources, data, query, strict_builtin_errors)
        bundle = compiler.build()
        projection = _projection(source.text for source in sources) if project_input else None
        policy = cls(bundle, query, tuple(modules), strict_builtin_errors, projection)
        compiler.trial(policy)
        return policy

    def evaluate(self, input_document: Mapping[str, Any]) -> RegoResult:
        """Run the policy on one request's ``input``; see the module docstring for the result.

        The query's value may be ``true``/``false`` or an object: ``allowed`` (boolean,
        required), ``http_status`` (100-599), ``body`` or ``message`` (string), ``reason``
        (``^[a-z0-9_.]+$``), ``headers`` and ``response_headers_to_add`` (objects of
        strings; names are lowercased). Undefined denies with :data:`NO_DECISION_MESSAGE`.
        Other keys, wrong types, and evaluation errors raise :class:`RegoEvaluationError`.
        """
        return _decision(self.evaluate_raw(input_document))

    def evaluate_raw(self, input_document: Mapping[str, Any]) -> Any:
        """The query's value as Python data (strings, numbers, lists, dicts, None), or
        :data:`UNDEFINED`; raises :class:`RegoEvaluationError` on an evaluation error."""
        interpreter, bundle = self._handle
        handle = _new_input()
        try:
            if self._projection is None:
                _push(handle, input_document, 0)
            else:
                _push_projected(handle, input_document, self._projection, 0)
            if _set_input(interpreter, handle):
                raise RegoEvaluationError(f"rego-cpp refused the input: {_last_error(interpreter)}")
        finally:
            _free_input(handle)
        output = _bundle_query(interpreter, bundle)
        if not output:
            raise RegoEvaluationError(f"the Rego query failed: {_last_error(interpreter)}")
        try:
            root = _output_node(output)
            if not root:
                raise RegoEvaluationError("the Rego query returned no output")
            return _result_value(root)
        finally:
            _free_output(output)

    def __repr__(self) -> str:
        files = ", ".join(str(path) for path in self.modules)
        return f"RegoPolicy({self._query}; {files})"


UNDEFINED: Final[Any] = _UNDEFINED_VALUE
"""What :meth:`RegoPolicy.evaluate_raw` returns when the query is undefined."""


# ---- compiling ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Source:
    path: Path
    name: str
    """The name rego-cpp knows the module by (unique, and kept whole in plans)."""
    text: str
    raw: bytes

    def line_at(self, offset: int) -> int:
        return self.raw.count(b"\n", 0, max(0, offset)) + 1


def _read_module(path: Path, problems: list[RegoProblem]) -> _Source | None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(RegoProblem(str(path), None, f"cannot read the module: {exc.strerror}"))
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        problems.append(RegoProblem(str(path), line, "the module is not valid UTF-8"))
        return None
    if "\x00" in text:
        problems.append(RegoProblem(str(path), None, "the module contains a NUL character"))
        return None
    return _Source(path, "", text, raw)


def _merge_data(files: Sequence[Path], problems: list[RegoProblem]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    owners: dict[tuple[str, ...], str] = {}
    for path in files:
        try:
            document = orjson.loads(path.read_bytes())
        except OSError as exc:
            problems.append(RegoProblem(str(path), None, f"cannot read the data: {exc.strerror}"))
            continue
        except orjson.JSONDecodeError as exc:
            problems.append(RegoProblem(str(path), exc.lineno, f"invalid JSON: {exc.msg}"))
            continue
        if not isinstance(document, dict):
            problems.append(RegoProblem(str(path), None, "a data file must hold a JSON object"))
            continue
        _merge_into(merged, document, (), str(path), owners, problems)
    return merged


def _merge_into(
    target: dict[str, Any],
    source: Mapping[str, Any],
    prefix: tuple[str, ...],
    file: str,
    owners: dict[tuple[str, ...], str],
    problems: list[RegoProblem],
) -> None:
    for key, value in source.items():
        path = (*prefix, key)
        current = target.get(key, _UNDEFINED_VALUE)
        if current is _UNDEFINED_VALUE:
            target[key] = value
            owners[path] = file
        elif isinstance(current, dict) and isinstance(value, dict):
            _merge_into(current, value, path, file, owners, problems)
        else:
            other = next(
                (owners[path[:n]] for n in range(len(path), 0, -1) if path[:n] in owners), "?"
            )
            problems.append(
                RegoProblem(file, None, f"data.{'.'.join(path)} is also defined by {other}")
            )


class _Compiler:
    def __init__(
        self, sources: list[_Source], data: dict[str, Any], query: str, strict: bool
    ) -> None:
        # Unique names (two modules may share a file name); errors are mapped back.
        self.sources = [
            _Source(s.path, f"{index:04d}-{s.path.name}", s.text, s.raw)
            for index, s in enumerate(sources)
        ]
        self.by_name = {source.name: source for source in self.sources}
        self.data = data
        self.query = query
        self.strict = strict

    def build(self) -> Any:
        interpreter = _interpreter(self.strict)
        try:
            for source in self.sources:
                interpreter.add_module(source.name, source.text)
            if self.data:
                interpreter.add_data_json(orjson.dumps(self.data).decode())
            bundle = interpreter.build(f"{_RESULT_VAR} := {self.query}")
        except regopy.RegoError as exc:
            raise RegoCompileError(self._all_problems(str(exc))) from None
        if not bundle.ok():
            raise RegoCompileError([RegoProblem("<bundle>", None, "rego-cpp built no bundle")])
        problems = list(self._plan_problems(interpreter, bundle))
        if problems:
            raise RegoCompileError(problems)
        return bundle

    def trial(self, policy: RegoPolicy) -> None:
        """Evaluate once against ``{}``: rego-cpp finds some errors only when it runs."""
        try:
            policy.evaluate_raw({})
        except _CodedEvaluationError as exc:
            if exc.code not in _RECOVERABLE_CODES:
                raise RegoCompileError(
                    [RegoProblem(self._files(), None, f"evaluating with an empty input: {exc}")]
                ) from None
        except RegoEvaluationError as exc:
            raise RegoCompileError(
                [RegoProblem(self._files(), None, f"evaluating with an empty input: {exc}")]
            ) from None

    def _files(self) -> str:
        return ", ".join(str(source.path) for source in self.sources)

    def _file(self, name: str) -> str:
        source = self.by_name.get(name)
        return str(source.path) if source is not None else name or "<rego>"

    def _all_problems(self, text: str) -> list[RegoProblem]:
        """rego-cpp stops at the first module with syntax errors: ask about each alone."""
        found = list(self._problems_from(text))
        if len(self.sources) > 1:
            for source in self.sources:
                interpreter = _interpreter(self.strict)
                try:
                    interpreter.add_module(source.name, source.text)
                    interpreter.build("true")
                except regopy.RegoError as exc:
                    found.extend(self._problems_from(str(exc)))
        return list(dict.fromkeys(found))

    def _problems_from(self, text: str) -> Iterator[RegoProblem]:
        errors = _parse_errors(text)
        if not errors:
            yield RegoProblem(self._files(), None, text.strip() or "rego-cpp failed")
            return
        for name, offset, message in errors:
            source = self.by_name.get(name)
            line = source.line_at(offset) if source is not None and offset is not None else None
            yield RegoProblem(self._file(name), line, message)

    def _plan_problems(self, interpreter: Any, bundle: Any) -> Iterator[RegoProblem]:
        """Problems in the compiled plan: calls to functions that neither a module nor
        rego-cpp defines (rego-cpp reports them only when a request reaches the call), a
        query naming no rule, data hiding a rule. (The plan is read from the bundle's node
        tree: ``save_bundle`` to JSON corrupts the heap once grpc is imported.)"""
        plan = _read_plan(bundle._impl)
        seen: set[tuple[str, str, int | None]] = set()
        for name, text in plan.calls:
            if name in plan.functions:
                continue
            if name in plan.builtins and interpreter.is_builtin(name):
                continue
            file, line = self._locate(text)
            if (name, file, line) in seen:
                continue
            seen.add((name, file, line))
            what = "unsupported built-in" if name in plan.builtins else "unknown function"
            yield RegoProblem(file, line, f"{what} {name} (rego-cpp {regopy.__version__})")
        wanted = tuple(self.query.split(".")[1:])
        if QUERY_PATTERN.match(self.query) and wanted not in plan.rules:
            yield RegoProblem("<query>", None, f"no rule defines {self.query}")
        for rule in sorted(plan.rules):
            node: Any = self.data
            for depth, key in enumerate(rule):
                if not isinstance(node, dict) or key not in node:
                    break
                node = node[key]
                if depth == len(rule) - 1 or not isinstance(node, dict):
                    yield RegoProblem(
                        "<data>",
                        None,
                        f"data.{'.'.join(rule[: depth + 1])} from a data file would hide "
                        f"the rule data.{'.'.join(rule)}",
                    )
                    break

    def _locate(self, text: str) -> tuple[str, int | None]:
        """The module and line where a call's source text first appears."""
        needle = text.encode("utf-8")
        for source in self.sources:
            offset = source.raw.find(needle) if needle else -1
            if offset >= 0:
                return str(source.path), source.line_at(offset)
        return self._files(), None


@dataclass(slots=True)
class _Plan:
    builtins: set[str]
    functions: set[str]
    rules: set[tuple[str, ...]]
    calls: list[tuple[str, str]]
    """(function name, the call's source text), in plan order."""


def _node_type_name(node: int) -> str:
    size = _C.regoNodeTypeNameSize(node) + 1  # regopy's wrapper forgets the NUL
    buffer = ctypes.create_string_buffer(size)
    if _C.regoNodeTypeName(node, buffer, size):
        return ""
    return buffer.value.decode("utf-8", "replace")


def _read_plan(bundle: int) -> _Plan:
    plan = _Plan(set(), set(), set(), [])
    root = _C.regoBundleNode(bundle)
    stack = [root] if root else []
    while stack:
        node = stack.pop()
        kind = _node_type_name(node)
        children = list(_children(node))
        if kind == "rego-builtinfunction" and children:
            plan.builtins.add(_node_value(children[0]))
        elif kind == "rego-function" and len(children) >= 2:
            plan.functions.add(_node_value(children[0]))
            path = [_node_value(part) for part in _children(children[1])]
            if path and not path[-1].startswith("query$"):
                plan.rules.add(tuple(path[1:]))
        elif kind == "rego-callstmt" and children:
            plan.calls.append((_node_value(children[0]), _node_value(node)))
        stack.extend(reversed(children))
    return plan


# rego-cpp reports errors as an S-expression: `(error 10:pol/a.rego|32|2 (errormsg 24:...)`
# where `N:` prefixes a string of N bytes and `|offset|length` locates it in the source.
_LENGTH = re.compile(rb"(\d+):")
_LOCATION = re.compile(rb"\|(\d+)\|(\d+)")
_HEAD = re.compile(rb"[^\s()|]+")


@dataclass(slots=True)
class _Sexp:
    head: str
    text: str | None = None
    file: str | None = None
    offset: int | None = None
    children: list[_Sexp] | None = None


def _parse_errors(text: str) -> list[tuple[str, int | None, str]]:
    """(module name, byte offset, message) for each ``error`` in rego-cpp's error text."""
    raw = text.encode("utf-8")
    start = raw.find(b"(")
    if start < 0:
        return []
    try:
        tree, _ = _parse_sexp(raw, start)
    except (ValueError, IndexError):
        return []
    found: list[tuple[str, int | None, str]] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if node.head == "error":
            message = next(
                (c.text for c in node.children or () if c.head == "errormsg" and c.text), None
            )
            found.append((node.file or "", node.offset, message or "error"))
        else:
            stack.extend(reversed(node.children or []))
    return found


def _parse_sexp(raw: bytes, position: int) -> tuple[_Sexp, int]:
    if raw[position : position + 1] != b"(":
        raise ValueError("expected (")
    head = _HEAD.match(raw, position + 1)
    if head is None:
        raise ValueError("expected a head")
    node = _Sexp(head.group().decode("utf-8", "replace"), children=[])
    position = head.end()
    while True:
        while raw[position : position + 1].isspace():
            position += 1
        char = raw[position : position + 1]
        if char == b")":
            return node, position + 1
        if char == b"(":
            child, position = _parse_sexp(raw, position)
            assert node.children is not None
            node.children.append(child)
            continue
        length = _LENGTH.match(raw, position)
        if length is not None:
            end = length.end() + int(length.group(1))
            if end > len(raw):
                raise ValueError("truncated string")
            value = raw[length.end() : end].decode("utf-8", "replace")
            position = end
            location = _LOCATION.match(raw, position)
            if location is not None:
                node.file, node.offset = value, int(location.group(1))
                position = location.end()
            else:
                node.text = value
            continue
        location = _LOCATION.match(raw, position)
        if location is not None:
            position = location.end()
            continue
        raise ValueError(f"unexpected {char!r}")


# ---- the input ---------------------------------------------------------------------------

_Projection = dict[str, "_Projection | None"]
"""The input paths a policy can read: None below a key means all of its value."""

_INPUT = re.compile(r"(?<![A-Za-z0-9_])input(?![A-Za-z0-9_])")
_SEGMENT = re.compile(r'\s*(?:\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*"([^"\\]*)"\s*\])')


_STRING_OR_COMMENT = re.compile(r'"(?:[^"\\\n]|\\.)*"|`[^`]*`|#[^\n]*')


def _without_comments(text: str) -> str:
    """``text`` with its comments blanked (strings kept: a ``#`` in a string stays)."""
    return _STRING_OR_COMMENT.sub(
        lambda found: " " * len(found[0]) if found[0].startswith("#") else found[0], text
    )


def _projection(texts: Iterator[str]) -> _Projection | None:
    """The input paths named in the modules' code (every ``input`` token, strings
    included, so that it can only over-include); None when one names ``input`` itself,
    or reads it with a computed key. Comments do not count: prose says "input" freely."""
    root: _Projection = {}
    for text in map(_without_comments, texts):
        for match in _INPUT.finditer(text):
            chain: list[str] = []
            position = match.end()
            while segment := _SEGMENT.match(text, position):
                chain.append(segment.group(1) or segment.group(2) or "")
                position = segment.end()
            if not chain:
                return None
            node = root
            for key in chain[:-1]:
                child = node.setdefault(key, {})
                if child is None:
                    break
                node = child
            else:
                node[chain[-1]] = None
    return root


def _push_projected(handle: int, value: Any, projection: _Projection, depth: int) -> None:
    if not isinstance(value, Mapping):
        _push(handle, value, depth)
        return
    count = 0
    for key, below in projection.items():
        if key not in value:
            continue
        if _input_string(handle, orjson.dumps(key)[1:-1]):
            raise RegoEvaluationError("rego-cpp refused an input key")
        if below is None:
            _push(handle, value[key], depth + 1)
        else:
            _push_projected(handle, value[key], below, depth + 1)
        if _input_item(handle):
            raise RegoEvaluationError("rego-cpp refused an input object item")
        count += 1
    if _input_object(handle, count):
        raise RegoEvaluationError("rego-cpp refused an input object")


def _push(handle: int, value: Any, depth: int) -> None:
    """Append ``value`` to a C API input (a stack machine), strings JSON-escaped."""
    kind = type(value)
    if kind is str:
        failed = _input_string(handle, orjson.dumps(value)[1:-1])
    elif kind is dict or isinstance(value, Mapping):
        if depth >= _MAX_DEPTH:
            raise RegoEvaluationError("the Rego input nests too deeply")
        for key, item in value.items():
            if type(key) is not str:
                raise RegoEvaluationError(f"the Rego input has a non-string key {key!r}")
            if _input_string(handle, orjson.dumps(key)[1:-1]):
                raise RegoEvaluationError("rego-cpp refused an input key")
            _push(handle, item, depth + 1)
            if _input_item(handle):
                raise RegoEvaluationError("rego-cpp refused an input object item")
        failed = _input_object(handle, len(value))
    elif kind is list or kind is tuple:
        if depth >= _MAX_DEPTH:
            raise RegoEvaluationError("the Rego input nests too deeply")
        for item in value:
            _push(handle, item, depth + 1)
        failed = _input_array(handle, len(value))
    elif value is None:
        failed = _input_null(handle)
    elif kind is bool:
        failed = _input_bool(handle, value)
    elif kind is int:
        # the C API takes 64-bit integers; larger ones lose precision, as in JSON
        failed = _input_int(handle, value) if -_INT64 <= value < _INT64 else _float(handle, value)
    elif kind is float:
        failed = _float(handle, value)
    else:
        raise RegoEvaluationError(f"the Rego input cannot hold a {kind.__name__}")
    if failed:
        raise RegoEvaluationError(f"rego-cpp refused an input {kind.__name__}")


def _float(handle: int, value: float) -> int:
    number = float(value)
    if not math.isfinite(number):
        raise RegoEvaluationError("the Rego input cannot hold NaN or infinity")
    return _input_float(handle, number)


# ---- the output --------------------------------------------------------------------------


class _CodedEvaluationError(RegoEvaluationError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def _children(node: int) -> Iterator[int]:
    for index in range(_node_size(node)):
        child = _node_get(node, index)
        if child:
            yield child


def _result_value(root: int) -> Any:
    kind = _node_type(root)
    if kind == _UNDEFINED:
        return _UNDEFINED_VALUE
    if kind in (_ERROR, _ERROR_SEQ):
        raise _error(root)
    if kind != _RESULTS:
        raise RegoEvaluationError(f"unexpected rego-cpp output (node kind {kind})")
    results = list(_children(root))
    if not results:
        return _UNDEFINED_VALUE
    if len(results) > 1:
        raise RegoEvaluationError("the Rego query has more than one result")
    for part in _children(results[0]):
        if _node_type(part) != _BINDINGS:
            continue
        for binding in _children(part):
            pair = list(_children(binding))
            if len(pair) == 2 and _node_value(pair[0]) == _RESULT_VAR:
                return _value(pair[1], 0)
    raise RegoEvaluationError("the Rego query bound no value")


def _error(node: int) -> _CodedEvaluationError:
    errors = [node] if _node_type(node) == _ERROR else list(_children(node))
    messages: list[str] = []
    code = ""
    for error in errors:
        for child in _children(error):
            kind = _node_type(child)
            if kind == _ERROR_MESSAGE:
                messages.append(_node_value(child))
            elif kind == _ERROR_CODE:
                code = code or _node_value(child)
    text = "; ".join(messages) or "unknown error"
    return _CodedEvaluationError(f"{text} ({code})" if code else text, code)


def _value(node: int, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise RegoEvaluationError("the Rego result nests too deeply")
    kind = _node_type(node)
    if kind == _STRING:
        return _string(_node_value(node))
    if kind == _TRUE:
        return True
    if kind == _FALSE:
        return False
    if kind == _INT:
        return int(_node_value(node))
    if kind == _FLOAT:
        return float(_node_value(node))
    if kind == _NULL:
        return None
    if kind == _OBJECT:
        result: dict[str, Any] = {}
        for item in _children(node):
            parts = list(_children(item)) if _node_type(item) == _OBJECT_ITEM else []
            if len(parts) != 2:
                raise RegoEvaluationError("unexpected rego-cpp object item")
            key = _value(parts[0], depth + 1)
            if not isinstance(key, str):
                raise RegoEvaluationError(f"the Rego result has a non-string key {key!r}")
            result[key] = _value(parts[1], depth + 1)
        return result
    if kind in (_ARRAY, _SET):
        return [_value(child, depth + 1) for child in _children(node)]
    if kind in (_TERM, _SCALAR):
        inner = list(_children(node))
        if len(inner) == 1:
            return _value(inner[0], depth + 1)
    if kind == _UNDEFINED:
        return _UNDEFINED_VALUE
    if kind in (_ERROR, _ERROR_SEQ):
        raise _error(node)
    raise RegoEvaluationError(f"unexpected rego-cpp value (node kind {kind})")


def _string(value: str) -> str:
    """A string node's text: JSON-escaped (input, data, literals), quoted and escaped (some
    built-ins, e.g. ``json.marshal``), or raw (``base64.decode``…)."""
    if "\\" not in value and '"' not in value:
        return value
    try:
        decoded = orjson.loads(f'"{value}"')
    except orjson.JSONDecodeError:
        pass
    else:
        assert isinstance(decoded, str)
        return decoded
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        try:
            decoded = orjson.loads(value)
        except orjson.JSONDecodeError:
            pass
        else:
            if isinstance(decoded, str):
                return decoded
    return value


# ---- the decision ------------------------------------------------------------------------


def _decision(value: Any) -> RegoResult:
    if value is _UNDEFINED_VALUE:
        return _UNDEFINED_DENY
    if value is True:
        return _ALLOW
    if value is False:
        return _DENY
    if not isinstance(value, dict):
        raise RegoEvaluationError(
            f"the Rego decision must be a boolean or an object, not {_type_name(value)}"
        )
    unknown = sorted(set(value) - _DECISION_KEYS)
    if unknown:
        raise RegoEvaluationError(f"the Rego decision has unknown keys: {', '.join(unknown)}")
    allowed = value.get("allowed")
    if not isinstance(allowed, bool):
        raise RegoEvaluationError("the Rego decision needs a boolean 'allowed'")
    status = value.get("http_status")
    if status is not None and (type(status) is not int or not 100 <= status <= 599):
        raise RegoEvaluationError(f"http_status must be an integer in 100..599, not {status!r}")
    if "body" in value and "message" in value:
        raise RegoEvaluationError("the Rego decision has both 'body' and 'message'")
    message = value.get("body", value.get("message"))
    if message is not None and not isinstance(message, str):
        raise RegoEvaluationError(f"body/message must be a string, not {_type_name(message)}")
    reason = value.get("reason")
    if reason is not None and not (isinstance(reason, str) and REASON_PATTERN.match(reason)):
        raise RegoEvaluationError(f"reason must match {REASON_PATTERN.pattern}, not {reason!r}")
    headers = _headers(value.get("headers"), "headers")
    response_headers = _headers(value.get("response_headers_to_add"), "response_headers_to_add")
    return RegoResult(
        allowed,
        status,
        message,
        reason,
        headers,
        response_headers if allowed else _NO_HEADERS,
    )


def _headers(value: Any, field: str) -> Mapping[str, str]:
    if value is None:
        return _NO_HEADERS
    if not isinstance(value, dict):
        raise RegoEvaluationError(f"{field} must be an object of strings")
    headers: dict[str, str] = {}
    for name, text in value.items():
        lowered = name.lower()
        if not _HEADER_NAME.match(lowered):
            raise RegoEvaluationError(f"{field}: {name!r} is not a valid header name")
        if not isinstance(text, str):
            raise RegoEvaluationError(f"{field}: {name!r} must be a string, not {_type_name(text)}")
        if _BAD_HEADER_VALUE.search(text):
            raise RegoEvaluationError(f"{field}: {name!r} has control characters")
        if lowered in headers:
            raise RegoEvaluationError(f"{field}: {name!r} is given twice")
        headers[lowered] = text
    return MappingProxyType(headers)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object" if isinstance(value, dict) else type(value).__name__
