"""Layer 4, cost — not built yet (issue: token estimates, budgets reserved in Redis).

It will implement :class:`authz_service.layers.base.Layer`.
"""
