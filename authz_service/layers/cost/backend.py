"""The quota store a serving process owns: Redis when ``REDIS_URL`` is set, else the
embedded store. It outlives policy reloads, so counters survive a reload."""

from __future__ import annotations

from dataclasses import dataclass, field

from authz_service.layers.cost.store.base import QuotaStore
from authz_service.layers.cost.store.memory import MemoryStore
from authz_service.layers.cost.store.redis_store import RedisStore

CLIENT_TIMEOUT_S = 1.0
"""The Redis client's own socket timeout; each decision has a shorter deadline of its own
(``cost.store.timeout_ms``)."""


@dataclass(frozen=True, slots=True)
class QuotaBackend:
    store: QuotaStore = field(default_factory=MemoryStore)
    name: str = "embedded"
    """``redis``, ``redis-cluster`` or ``embedded``: in logs, metrics and the decision log."""
    fallback: MemoryStore = field(default_factory=MemoryStore)
    """Local limits while ``store`` is down (``on_failure: fallback``); kept across reloads."""


def open_backend(redis_url: str | None, cluster: bool = False) -> QuotaBackend:
    if not redis_url:
        return QuotaBackend()
    store = RedisStore.from_url(redis_url, cluster=cluster, timeout_s=CLIENT_TIMEOUT_S)
    return QuotaBackend(store, "redis-cluster" if cluster else "redis")
