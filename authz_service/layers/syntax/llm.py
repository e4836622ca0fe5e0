"""Per-tier limits on LLM request bodies: how many messages, how much text, how many
output tokens, which parameters. The shape itself is the built-in schema's job; this
module measures what the schema cannot bound per tier."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from authz_service import json_pointer
from authz_service.decision import Denial

LlmApi = Literal["openai.chat_completions", "openai.completions", "anthropic.messages"]
LLM_APIS: tuple[LlmApi, ...] = (
    "openai.chat_completions",
    "openai.completions",
    "anthropic.messages",
)
ANY_TIER = "*"

CHARS_PER_PROMPT_TOKEN = 4
"""Completions may send a prompt as token ids; each counts as this many characters."""

_ALWAYS_ALLOWED: Mapping[LlmApi, frozenset[str]] = {
    "openai.chat_completions": frozenset({"model", "messages"}),
    "openai.completions": frozenset({"model", "prompt"}),
    "anthropic.messages": frozenset({"model", "messages", "max_tokens"}),
}


@dataclass(frozen=True, slots=True)
class LlmLimits:
    max_messages: int | None = None
    max_message_chars: int | None = None
    max_total_chars: int | None = None
    max_output_tokens: int | None = None
    allowed_parameters: frozenset[str] | None = None
    """Top-level body keys a request may use besides the API's required ones."""


@dataclass(frozen=True, slots=True)
class LlmPolicy:
    api: LlmApi
    default: LlmLimits = field(default_factory=LlmLimits)
    by_tier: Mapping[str, LlmLimits] = field(default_factory=dict)
    """Each tier's limits, already merged over ``default`` (the ``"*"`` entry)."""

    def limits_for(self, tier: str | None) -> tuple[str, LlmLimits]:
        """The tier's name as the client knows it (``*`` without one), and its limits."""
        if tier is None:
            return ANY_TIER, self.default
        return tier, self.by_tier.get(tier, self.default)


@dataclass(frozen=True, slots=True)
class _Text:
    pointer: str
    chars: int


def check_llm_body(policy: LlmPolicy, body: Mapping[str, Any], tier: str | None) -> Denial | None:
    """The first limit ``body`` breaks for ``tier``, as a denial; the body already
    passed the API's schema, so its shape is known."""
    tier_name, limits = policy.limits_for(tier)
    if limits.allowed_parameters is not None:
        allowed = limits.allowed_parameters | _ALWAYS_ALLOWED[policy.api]
        for key in body:
            if key not in allowed:
                return _denial(
                    422,
                    "syntax.parameter_not_allowed",
                    f"parameter {key[:64]!r} is not allowed for tier {tier_name!r}",
                    f"/{json_pointer.escape(key)}",
                    tier_name,
                )
    output = _output_tokens(policy.api, body)
    if output is not None and limits.max_output_tokens is not None:
        pointer, requested = output
        if requested > limits.max_output_tokens:
            return _denial(
                422,
                "syntax.max_tokens_too_high",
                f"{requested} output tokens requested; tier {tier_name!r} allows at most "
                f"{limits.max_output_tokens}",
                pointer,
                tier_name,
                limits.max_output_tokens,
            )
    if policy.api != "openai.completions" and limits.max_messages is not None:
        count = len(body["messages"])
        if count > limits.max_messages:
            return _denial(
                413,
                "syntax.too_many_messages",
                f"{count} messages; tier {tier_name!r} allows at most {limits.max_messages}",
                "/messages",
                tier_name,
                limits.max_messages,
            )
    if limits.max_message_chars is None and limits.max_total_chars is None:
        return None
    return _check_text(policy.api, body, limits, tier_name)


def _check_text(
    api: LlmApi, body: Mapping[str, Any], limits: LlmLimits, tier: str
) -> Denial | None:
    total = 0
    for text in _texts(api, body):
        if limits.max_message_chars is not None and text.chars > limits.max_message_chars:
            return _denial(
                413,
                "syntax.message_too_long",
                f"a message of {text.chars} characters; tier {tier!r} allows at most "
                f"{limits.max_message_chars} per message",
                text.pointer,
                tier,
                limits.max_message_chars,
            )
        total += text.chars
    if limits.max_total_chars is not None and total > limits.max_total_chars:
        return _denial(
            413,
            "syntax.prompt_too_long",
            f"the prompt has {total} characters; tier {tier!r} allows at most "
            f"{limits.max_total_chars} in total",
            "",
            tier,
            limits.max_total_chars,
        )
    return None


def _output_tokens(api: LlmApi, body: Mapping[str, Any]) -> tuple[str, int] | None:
    keys = (
        ("max_completion_tokens", "max_tokens")
        if api == "openai.chat_completions"
        else ("max_tokens",)
    )
    for key in keys:
        value = body.get(key)
        if isinstance(value, int):
            return f"/{key}", value
    return None


def _texts(api: LlmApi, body: Mapping[str, Any]) -> Iterator[_Text]:
    """Each piece of text the model reads, with where it is (no copies of the text)."""
    if api == "openai.completions":
        prompt = body["prompt"]
        if isinstance(prompt, str):
            yield _Text("/prompt", len(prompt))
            return
        for index, item in enumerate(prompt):
            chars = len(item) if isinstance(item, str) else _token_chars(item)
            yield _Text(f"/prompt/{index}", chars)
        return
    system = body.get("system")
    if system is not None:
        yield _Text("/system", _content_chars(system))
    for index, message in enumerate(body["messages"]):
        yield _Text(f"/messages/{index}", _content_chars(message.get("content")))


def _content_chars(content: Any) -> int:
    """Characters of a message's content: a string, or the text of its parts/blocks."""
    if isinstance(content, str):
        return len(content)
    if not isinstance(content, list):
        return 0
    chars = 0
    for part in content:
        if isinstance(part, dict):
            text = part.get("text")
            if isinstance(text, str):
                chars += len(text)
            nested = part.get("content")  # Anthropic tool_result blocks
            if nested is not None:
                chars += _content_chars(nested)
    return chars


def _token_chars(item: Any) -> int:
    return (len(item) if isinstance(item, list) else 1) * CHARS_PER_PROMPT_TOKEN


def _denial(
    status: int,
    reason: str,
    message: str,
    pointer: str,
    tier: str,
    limit: int | None = None,
) -> Denial:
    details: dict[str, Any] = {"pointer": pointer, "tier": tier}
    if limit is not None:
        details["limit"] = limit
    return Denial(status, reason, message, details=details)
