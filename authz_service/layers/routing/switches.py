"""A cap on how often one principal moves to another provider by asking for another model
(probing providers, or playing their prices against each other). Kept per replica."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

_MAX_PRINCIPALS = 100_000
_WINDOW_S = 60.0


class SwitchCounter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._limit = per_minute
        self._clock = clock
        # principal -> (last model, last provider, window start, switches in the window)
        self._seen: OrderedDict[str, tuple[str, str, float, int]] = OrderedDict()

    def allow(self, principal: str, model: str, provider: str) -> float | None:
        """``None`` if allowed (and remembered), else seconds until switching is allowed."""
        now = self._clock()
        last = self._seen.pop(principal, None)
        if last is None:
            self._remember(principal, (model, provider, now, 0))
            return None
        last_model, last_provider, started, switches = last
        if now - started >= _WINDOW_S:
            started, switches = now, 0
        if model != last_model and provider != last_provider:
            if switches >= self._limit:
                self._remember(principal, last)
                return started + _WINDOW_S - now
            switches += 1
        self._remember(principal, (model, provider, started, switches))
        return None

    def _remember(self, principal: str, entry: tuple[str, str, float, int]) -> None:
        self._seen[principal] = entry
        if len(self._seen) > _MAX_PRINCIPALS:
            self._seen.popitem(last=False)
