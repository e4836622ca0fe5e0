"""Layer 3, semantics: what a valid, authenticated request may do.

In order: the route's declarative rules (the first that denies decides), its Rego policy,
then prompt-injection detection on the text the model will read. Rules and detection can
run in dry-run: they log and count what they would have denied, and allow.
"""

from __future__ import annotations

from collections.abc import Callable

from authz_service.decision import Denial
from authz_service.layers.base import Context, LayerName, TokenEstimate
from authz_service.layers.semantics.injection import Finding, extract_segments
from authz_service.layers.semantics.rego import RegoPolicy
from authz_service.layers.semantics.rego_input import rego_input
from authz_service.layers.semantics.settings import InjectionCheck, SemanticsRoute
from authz_service.layers.syntax.llm import LlmApi

WOULD_DENY = "would_deny"
"""Metadata key: reasons a dry-run check would have denied with (comma-separated)."""
FLAGGED = "flagged"
"""Metadata key: reasons a check flagged but allowed (comma-separated)."""
INJECTION_REASON = "semantics.prompt_injection"


TokenCounter = Callable[[Context, LlmApi], TokenEstimate]
"""Counts (once per request) the tokens of a body valid for the API: the pipeline passes
the cost layer's estimator, so a policy sees the number the cost layer reserves."""


class SemanticsLayer:
    name: LayerName = "semantics"

    def __init__(self, count_tokens: TokenCounter) -> None:
        self._count_tokens = count_tokens

    async def check(self, ctx: Context) -> Denial | None:
        assert ctx.route is not None  # the protocol layer denied unrouted requests
        settings: SemanticsRoute = ctx.route.semantics
        if not settings.active:
            return None
        for rule in settings.rules:
            if not rule.denies(ctx):
                continue
            reason = f"semantics.rule.{rule.name}"
            if rule.mode == "dry_run":
                _note(ctx, WOULD_DENY, reason)
                continue
            return Denial(
                rule.status,
                reason,
                f"rule {rule.name!r}: {rule.message}",
                details={"rule": rule.name},
            )
        if settings.rego is not None:
            if settings.token_api is not None:
                self._count_tokens(ctx, settings.token_api)
            denial = _ask_rego(ctx, settings.rego, settings.rego_name or "")
            if denial is not None:
                return denial
        if settings.injection is not None:
            return _detect_injection(ctx, settings.injection)
        return None


def _ask_rego(ctx: Context, policy: RegoPolicy, name: str) -> Denial | None:
    # An evaluation error propagates: the pipeline turns it into a fail-closed 503.
    result = policy.evaluate(rego_input(ctx))
    if result.allowed:
        ctx.upstream_headers.update(result.headers)
        ctx.response_headers.update(result.response_headers)
        return None
    reason = "semantics.rego" + (f".{result.reason}" if result.reason else "")
    return Denial(
        result.status or 403,
        reason,
        result.message or f"denied by the Rego policy {name!r}",
        headers=result.headers,
        details={"policy": name},
    )


def _detect_injection(ctx: Context, check: InjectionCheck) -> Denial | None:
    segments = extract_segments(check.api, ctx.fields, check.pointers, check.roles)
    if not segments:
        return None
    verdict = check.detector.scan(segments)
    tier = ctx.principal.tier if ctx.principal is not None else None
    answer = check.answer_for(tier)
    if verdict.score < answer.threshold or not verdict.findings:
        return None
    top = verdict.findings[0]
    ctx.metadata["injection"] = _describe(top)
    if answer.action == "dry_run":
        _note(ctx, WOULD_DENY, INJECTION_REASON)
        return None
    if answer.action == "flag":
        _note(ctx, FLAGGED, INJECTION_REASON)
        ctx.upstream_headers[check.header] = _describe(top)
        return None
    return Denial(
        check.status,
        INJECTION_REASON,
        f"possible prompt injection ({top.category}) found by the {top.detector} detector at "
        f"{top.pointer or 'the body'}, characters {top.start}-{top.end}",
        details={
            **_finding_details(top),
            # Every detector that fired, so a pattern hit is named even when the
            # classifier scored higher.
            "findings": [_finding_details(finding) for finding in verdict.findings],
        },
    )


def _finding_details(finding: Finding) -> dict[str, str | int | float]:
    return {
        "detector": finding.detector,
        "rule": finding.rule,
        "category": finding.category,
        "score": round(finding.score, 3),
        "pointer": finding.pointer,
        "start": finding.start,
        "end": finding.end,
        "via": finding.via,
    }


def _describe(finding: Finding) -> str:
    """One line for a header or the log: what fired and where, never the text."""
    return (
        f"score={finding.score:.2f}; detector={finding.detector}; rule={finding.rule}; "
        f"at={finding.pointer}:{finding.start}-{finding.end}; via={finding.via}"
    )


def _note(ctx: Context, key: str, reason: str) -> None:
    previous = ctx.metadata.get(key)
    ctx.metadata[key] = f"{previous},{reason}" if previous else reason
