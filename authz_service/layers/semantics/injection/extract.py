"""Extract the text an LLM will read from OpenAI / Anthropic request bodies.

Never raises on odd shapes: anything unexpected is skipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from authz_service import json_pointer
from authz_service.layers.semantics.injection.types import TextSegment

__all__ = ["MAX_POINTER_STRINGS", "extract_segments"]

MAX_POINTER_STRINGS = 256
_ROLE_ALIASES = {"function": "tool", "ipython": "tool"}


def _strings(value: Any, pointer: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield pointer, value
    elif depth < 16 and isinstance(value, dict):
        for k in sorted(value, key=str):
            yield from _strings(value[k], f"{pointer}/{json_pointer.escape(k)}", depth + 1)
    elif depth < 16 and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{pointer}/{i}", depth + 1)


def _role(msg: dict[str, Any]) -> str | None:
    role = msg.get("role")
    if not isinstance(role, str):
        return None
    return _ROLE_ALIASES.get(role, role)


def _openai_content(content: Any, ptr: str, role: str | None) -> Iterator[TextSegment]:
    if isinstance(content, str):
        yield TextSegment(ptr, role, content)
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, str):
                yield TextSegment(f"{ptr}/{j}", role, part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                yield TextSegment(f"{ptr}/{j}/text", role, part["text"])


def _messages(body: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any], str | None]]:
    """(index, message, role) of each message that is an object."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for i, msg in enumerate(messages):
            if isinstance(msg, dict):
                yield i, msg, _role(msg)


def _openai_chat(body: dict[str, Any], roles: frozenset[str] | None) -> Iterator[TextSegment]:
    for i, msg, role in _messages(body):
        if roles is not None and role not in roles:
            continue
        yield from _openai_content(msg.get("content"), f"/messages/{i}/content", role)
        calls = msg.get("tool_calls")
        if isinstance(calls, list):
            for k, call in enumerate(calls):
                fn = call.get("function") if isinstance(call, dict) else None
                if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                    ptr = f"/messages/{i}/tool_calls/{k}/function/arguments"
                    yield TextSegment(ptr, role, fn["arguments"])
    if roles is None:
        yield from _tool_descriptions(body.get("tools"))


def _tool_descriptions(tools: Any) -> Iterator[TextSegment]:
    """Tool definitions are read by the model too (tool poisoning); role None."""
    if not isinstance(tools, list):
        return
    for k, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        fn = tool.get("function")
        if isinstance(fn, dict) and isinstance(fn.get("description"), str):
            yield TextSegment(f"/tools/{k}/function/description", None, fn["description"])
        elif isinstance(tool.get("description"), str):
            yield TextSegment(f"/tools/{k}/description", None, tool["description"])


def _openai_completions(
    body: dict[str, Any], roles: frozenset[str] | None
) -> Iterator[TextSegment]:
    if roles is not None and "user" not in roles:
        return
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield TextSegment("/prompt", "user", prompt)
    elif isinstance(prompt, list):
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                yield TextSegment(f"/prompt/{i}", "user", p)
    if isinstance(body.get("suffix"), str):
        yield TextSegment("/suffix", "user", body["suffix"])


def _anthropic_blocks(blocks: Any, ptr: str, role: str | None) -> Iterator[TextSegment]:
    if isinstance(blocks, str):
        yield TextSegment(ptr, role, blocks)
        return
    if not isinstance(blocks, list):
        return
    for j, block in enumerate(blocks):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        bptr = f"{ptr}/{j}"
        if isinstance(block.get("text"), str):
            yield TextSegment(f"{bptr}/text", role, block["text"])
        elif kind == "tool_result":
            yield from _anthropic_blocks(block.get("content"), f"{bptr}/content", "tool")
        elif kind == "tool_use":  # the call's arguments, as OpenAI's tool_calls arguments
            strings = _strings(block.get("input"), f"{bptr}/input")
            for sptr, text in itertools.islice(strings, MAX_POINTER_STRINGS):
                yield TextSegment(sptr, role, text)
        elif kind == "document":
            src = block.get("source")
            if (
                isinstance(src, dict)
                and isinstance(src.get("data"), str)
                and src.get("type") == "text"
            ):
                yield TextSegment(f"{bptr}/source/data", role, src["data"])


def _anthropic(body: dict[str, Any], roles: frozenset[str] | None) -> Iterator[TextSegment]:
    if roles is None or "system" in roles:
        yield from _anthropic_blocks(body.get("system"), "/system", "system")
    for i, msg, role in _messages(body):
        ptr = f"/messages/{i}/content"
        for seg in _anthropic_blocks(msg.get("content"), ptr, role):
            if roles is None or seg.role in roles:
                yield seg
    if roles is None:
        yield from _tool_descriptions(body.get("tools"))


def extract_segments(
    api: str | None,
    body: Any,
    pointers: Sequence[str] = (),
    roles: frozenset[str] | None = None,
) -> list[TextSegment]:
    """The text segments of ``body`` that the model will read.

    ``api``: "openai.chat_completions" | "openai.completions" | "anthropic.messages" | None
    (None: only ``pointers``). ``roles``: only messages with these roles (None = all);
    tool definitions (role None) are only included when ``roles`` is None. ``pointers``: extra
    JSON pointers; every string under a pointer becomes a segment (at most
    MAX_POINTER_STRINGS per pointer).
    """
    out: list[TextSegment] = []
    if isinstance(body, dict):
        if api == "openai.chat_completions":
            out.extend(_openai_chat(body, roles))
        elif api == "openai.completions":
            out.extend(_openai_completions(body, roles))
        elif api == "anthropic.messages":
            out.extend(_anthropic(body, roles))
    seen = {s.pointer for s in out}
    for pointer in pointers:
        if not isinstance(pointer, str):
            continue
        value = json_pointer.resolve(body, pointer)
        if value is json_pointer.MISSING:
            continue
        for n, (ptr, text) in enumerate(_strings(value, pointer)):
            if n >= MAX_POINTER_STRINGS:
                break
            if ptr not in seen:
                seen.add(ptr)
                out.append(TextSegment(ptr, None, text))
    return out
