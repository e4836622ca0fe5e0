"""Layer 1, identity — not built yet (issue: JWT, API keys, mTLS → Principal).

It will implement :class:`authz_service.layers.base.Layer` and add a principal to the
context. Until then the pipeline has no identity layer: no request is authenticated.
"""
