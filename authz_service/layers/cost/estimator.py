"""One token estimate per request, counted by whichever layer asks first: a Rego policy that
reads ``input.token_estimate`` (semantic layer), else the cost layer. Both read the same
per-model rules, so the number a policy saw is the number that is reserved."""

from __future__ import annotations

from collections.abc import Callable

from authz_service.layers.base import Context, TokenEstimate
from authz_service.layers.cost.estimate import output_tokens, prompt_tokens
from authz_service.layers.cost.settings import CostSection, ModelCost
from authz_service.layers.cost.tokenizers import load_tokenizer
from authz_service.layers.syntax.llm import LlmApi

__all__ = ["TokenEstimator"]


class TokenEstimator:
    """Counts with the cost section's model rules, or the defaults without one."""

    __slots__ = ("_rules",)

    def __init__(self, section: CostSection | None) -> None:
        default = ModelCost()
        self._rules: Callable[[object], ModelCost] = (
            section.model if section is not None else lambda _name: default
        )
        models = (*section.models.values(), section.default_model) if section else (default,)
        # Tokenizers load here, with the policy: never on the request path.
        for rules in models:
            load_tokenizer(rules.tokenizer)

    def __call__(self, ctx: Context, api: LlmApi) -> TokenEstimate:
        """The request's estimate (``ctx.json_body`` is valid for ``api``: the syntax layer
        checked it), counted on the first call and kept in ``ctx``."""
        if ctx.token_estimate is None:
            body = ctx.json_body
            model = body.get("model")
            rules = self._rules(model)
            ctx.token_estimate = TokenEstimate(
                model if isinstance(model, str) else "",
                prompt_tokens(api, body, load_tokenizer(rules.tokenizer)),
                output_tokens(api, body, rules.default_output_tokens, rules.max_output_tokens),
            )
        return ctx.token_estimate
