"""Layer 3, semantics — not built yet (issue: rules, Rego, prompt-injection detection).

It will implement :class:`authz_service.layers.base.Layer`.
"""
