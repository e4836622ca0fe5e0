"""A circuit breaker for the quota store: once it keeps failing, stop asking it for a
while, so a dead Redis costs a branch per request instead of a timeout."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """``closed``: use the store. After ``failures`` consecutive failures, ``open``: skip it
    for ``open_s``. Then ``half_open``: one request probes it; success closes the breaker,
    failure opens it again."""

    def __init__(
        self, failures: int, open_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._open_s = open_s
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self.state: BreakerState = "closed"

    def allow(self) -> bool:
        """Whether this request may use the store (it becomes the probe when half-open)."""
        if self.state == "closed":
            return True
        if self.state == "open" and self._clock() - self._opened_at >= self._open_s:
            self.state = "half_open"
            return True
        return False

    def succeeded(self) -> None:
        self._failures = 0
        self.state = "closed"

    def failed(self) -> None:
        self._failures += 1
        if self.state == "half_open" or self._failures >= self._threshold:
            self.state = "open"
            self._opened_at = self._clock()
