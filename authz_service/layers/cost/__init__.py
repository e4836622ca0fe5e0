"""Layer 4, cost: token estimates and per-user, per-tenant, per-key, per-model, per-route
and global budgets and request rates, reserved atomically in Redis (one Lua script per
decision) or in the embedded store, before the request reaches the model.
"""

from authz_service.layers.cost.layer import CostLayer

__all__ = ["CostLayer"]
