"""Quota stores: all-or-nothing reservations across several limits (see :mod:`.base`)."""

from authz_service.layers.cost.store.base import (
    KEY_PREFIX,
    RESERVATION_ID_SEPARATOR,
    Charge,
    ChargeKind,
    LimitState,
    Outcome,
    QuotaStore,
    StoreError,
    Window,
    WindowKind,
    hash_tag,
    reservation_key,
)
from authz_service.layers.cost.store.memory import MemoryStore
from authz_service.layers.cost.store.redis_store import RedisStore

__all__ = [
    "KEY_PREFIX",
    "RESERVATION_ID_SEPARATOR",
    "Charge",
    "ChargeKind",
    "LimitState",
    "MemoryStore",
    "Outcome",
    "QuotaStore",
    "RedisStore",
    "StoreError",
    "Window",
    "WindowKind",
    "hash_tag",
    "reservation_key",
]
