"""What Envoy tells us about each provider: an average of its latency and of its error rate,
and a cool-down when either crosses its limit. Fed by the access-log stream, read by the
routing layer on every decision (both on the one event loop: no locks)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from authz_service.layers.routing.settings import HealthLimits, Provider


@dataclass(frozen=True, slots=True)
class Observation:
    """One request Envoy finished, as the access log saw it."""

    provider: str
    """Envoy's upstream cluster (a provider's ``cluster``), or a provider's route value."""
    status: int
    """The HTTP status sent downstream (0 when no response came)."""
    latency_ms: float
    upstream_failed: bool = False
    """Envoy could not get an answer from the upstream (reset, refused, timeout)."""

    @property
    def failed(self) -> bool:
        return self.upstream_failed or self.status == 0 or self.status >= 500


class ProviderHealth:
    __slots__ = ("_limits", "cooldown_until", "error_rate", "last_seen", "latency_ms", "samples")

    def __init__(self, limits: HealthLimits) -> None:
        self._limits = limits
        self.samples = 0
        self.latency_ms: float | None = None
        self.error_rate = 0.0
        self.cooldown_until = 0.0
        self.last_seen = 0.0

    def observe(self, observation: Observation, target_ms: float, now: float) -> str | None:
        """Add one observation; the reason when this one made the provider unhealthy."""
        alpha = self._limits.ewma_alpha
        failed = 1.0 if observation.failed else 0.0
        if self.samples == 0:
            self.error_rate = failed
        else:
            self.error_rate += alpha * (failed - self.error_rate)
        if not observation.failed:  # a fast failure says nothing about latency
            latency = observation.latency_ms
            previous = self.latency_ms
            self.latency_ms = (
                latency if previous is None else previous + alpha * (latency - previous)
            )
        self.samples += 1
        self.last_seen = now
        if self.samples < self._limits.min_samples or now < self.cooldown_until:
            return None
        if self.error_rate > self._limits.max_error_rate:
            return "error_rate"
        slow = target_ms * self._limits.max_latency_factor
        if self.latency_ms is not None and self.latency_ms > slow:
            return "latency"
        return None

    def start_cooldown(self, now: float) -> None:
        self.cooldown_until = now + self._limits.cooldown_s

    def available(self, now: float) -> bool:
        """Outside a cool-down. When one ends, the record starts afresh: the provider is
        tried again, and judged again on what it does next."""
        if self.cooldown_until == 0.0:
            return True
        if now < self.cooldown_until:
            return False
        self.samples, self.error_rate, self.latency_ms, self.cooldown_until = 0, 0.0, None, 0.0
        return True


class HealthBoard:
    """Every provider's health under one routing policy."""

    def __init__(
        self,
        providers: Iterable[Provider],
        limits: HealthLimits,
        on_unhealthy: Callable[[str, str, ProviderHealth], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._providers = {provider.route_value: provider for provider in providers}
        self._by_cluster = {provider.cluster: provider for provider in self._providers.values()}
        self._health = {name: ProviderHealth(limits) for name in self._names()}
        self._on_unhealthy = on_unhealthy
        self._clock = clock
        self._cooldown_s = limits.cooldown_s

    def _names(self) -> list[str]:
        return [provider.name for provider in self._providers.values()]

    def observe(self, observation: Observation) -> None:
        provider = self._providers.get(observation.provider) or self._by_cluster.get(
            observation.provider
        )
        if provider is None:
            return
        health = self._health[provider.name]
        now = self._clock()
        reason = health.observe(observation, provider.latency_target_ms, now)
        if reason is not None:
            health.start_cooldown(now)
            if self._on_unhealthy is not None:
                self._on_unhealthy(provider.name, reason, health)

    def available(self, provider: Provider) -> bool:
        return self._health[provider.name].available(self._clock())

    def latency_ms(self, provider: Provider) -> float | None:
        """The average latency, forgotten once ``cooldown_s`` pass without news: a provider
        a strategy stopped choosing because it was slow gets chosen, and measured, again."""
        health = self._health[provider.name]
        if health.latency_ms is not None and self._clock() - health.last_seen > self._cooldown_s:
            health.latency_ms = None
        return health.latency_ms

    def snapshot(self) -> dict[str, ProviderHealth]:
        return dict(self._health)
