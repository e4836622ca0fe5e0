"""Layer 3, semantics: what a valid, authenticated request is allowed to do.

Declarative rules on the principal, route, headers and body fields (compiled at load;
the first matching deny decides; dry-run available), Rego policies (OPA-compatible, via
regopy, compiled into a bundle at load, with an OPA-Envoy-like input), and prompt-
injection detection (normalization against evasion, a pattern library and a small
classifier shipped with the package) with per-tier thresholds and actions.
"""

from authz_service.layers.semantics.layer import SemanticsLayer

__all__ = ["SemanticsLayer"]
