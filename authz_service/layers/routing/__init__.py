"""Layer 5, routing — not built yet (issue: provider choice by tier, cost, latency).

It will implement :class:`authz_service.layers.base.Layer`.
"""
