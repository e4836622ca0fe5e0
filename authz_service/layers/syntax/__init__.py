"""Layer 2, syntax — not built yet (issue: JSON Schema/OpenAPI, body decoding, images).

It will implement :class:`authz_service.layers.base.Layer`. Until then only the
protocol layer's well-formedness checks apply to bodies.
"""
