"""The embedded quota store: one replica's counters in process memory.

Same semantics, window arithmetic and states as the Redis store (``quota.lua`` is the
reference), so a single replica — or a replica falling back while Redis is down — decides
exactly as Redis would. Every method decides without awaiting, so a decision is atomic
under asyncio. Entries are pruned when touched and swept periodically, so memory holds
only what can still matter.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from authz_service.layers.cost.store.base import (
    RESERVATION_ID_SEPARATOR,
    Charge,
    ChargeKind,
    LimitState,
    Outcome,
    Window,
    new_reservation_id,
    validate,
)

DAY_MS = 86_400_000
MARGIN_MS = 1_000
"""A fixed-window counter outlives its window by this much (as in Redis)."""
SWEEP_EVERY_MS = 10_000
"""How often a decision also drops every expired entry, touched or not."""
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def window_bounds(window: Window, now_ms: int) -> tuple[int, int]:
    """The current fixed window (epoch-aligned) or UTC calendar month: start, end in ms."""
    if window.kind == "calendar_month":
        day = date.fromordinal(now_ms // DAY_MS + _EPOCH_ORDINAL)
        first = date(day.year, day.month, 1)
        following = date(day.year + day.month // 12, day.month % 12 + 1, 1)
        return (
            (first.toordinal() - _EPOCH_ORDINAL) * DAY_MS,
            (following.toordinal() - _EPOCH_ORDINAL) * DAY_MS,
        )
    length = window.seconds * 1000
    start = now_ms - now_ms % length
    return start, start + length


@dataclass(slots=True)
class _Counter:
    """A fixed window or calendar month."""

    start: int
    used: int
    expires: int


@dataclass(slots=True)
class _Rolling:
    """An exact rolling window: every entry until it ages out."""

    entries: list[tuple[int, str]]
    """(ms, member), oldest first."""
    amounts: dict[str, int]
    total: int
    expires: int


@dataclass(slots=True)
class _Leases:
    """``in_flight`` leases: member → expiry ms."""

    until: dict[str, int]
    expires: int


_Entry = _Counter | _Rolling | _Leases


@dataclass(frozen=True, slots=True)
class _Held:
    """One charge of a reservation, as settle needs it."""

    key: str
    kind: ChargeKind
    window: Window
    start: int
    """The fixed window's start, or when a rolling entry was logged."""
    amount: int


@dataclass(frozen=True, slots=True)
class _Record:
    token: str
    held: tuple[_Held, ...]
    expires: int


def _size(entry: _Entry) -> int:
    if isinstance(entry, _Rolling):
        return len(entry.entries)
    if isinstance(entry, _Leases):
        return len(entry.until)
    return 1


def _lease_ms(charge: Charge, settle_within_ms: int) -> int:
    return charge.window.seconds * 1000 if charge.window.seconds > 0 else settle_within_ms


class MemoryStore:
    """:class:`~authz_service.layers.cost.store.base.QuotaStore` for one replica."""

    def __init__(self, clock: Callable[[], float] = time.time, settle_within_s: int = 3600) -> None:
        self._clock = clock
        self._settle_within_ms = settle_within_s * 1000
        self._entries: dict[str, _Entry] = {}
        self._records: dict[str, _Record] = {}
        self._next_sweep = 0

    def held(self) -> int:
        """Counters, rolling-log entries, leases and reservations held: what pruning
        keeps bounded."""
        return len(self._records) + sum(_size(e) for e in self._entries.values())

    async def reserve(self, partition: str, charges: Sequence[Charge]) -> Outcome:
        validate(charges)
        now = self._now()
        reservation_id = new_reservation_id(partition)
        if not charges:
            return Outcome(True, reservation_id, ())
        before: dict[str, tuple[int, int]] = {}
        added: dict[str, int] = {}
        amounts = [c.amount if c.kind == "tokens" else 1 for c in charges]
        exceeded: int | None = None
        for index, (charge, amount) in enumerate(zip(charges, amounts, strict=True)):
            if charge.key not in before:
                before[charge.key] = self._read(charge, now)
            pending = added.get(charge.key, 0)
            if exceeded is None and before[charge.key][0] + pending + amount > charge.limit:
                exceeded = index
            added[charge.key] = pending + amount
        if exceeded is not None:
            states = tuple(_state(c.limit, *before[c.key]) for c in charges)
            return Outcome(False, None, states, exceeded)
        token = reservation_id.partition(RESERVATION_ID_SEPARATOR)[2]
        held: list[_Held] = []
        states_out: list[LimitState] = []
        keep_ms = 1
        for index, (charge, amount) in enumerate(zip(charges, amounts, strict=True), start=1):
            start, reset, until_ms = self._write(charge, amount, f"{token}:{index}", now)
            old_reset = before[charge.key][1]
            if charge.kind == "in_flight":
                reset = min(old_reset, reset) if old_reset > 0 else reset
            elif charge.window.kind == "rolling" and old_reset > 0:
                reset = old_reset
            keep_ms = max(keep_ms, until_ms)
            held.append(_Held(charge.key, charge.kind, charge.window, start, amount))
            states_out.append(
                _state(charge.limit, before[charge.key][0] + added[charge.key], reset)
            )
        keep_ms = max(min(keep_ms, self._settle_within_ms), 1)
        self._records[reservation_id] = _Record(token, tuple(held), now + keep_ms)
        return Outcome(True, reservation_id, tuple(states_out))

    async def settle(self, reservation_id: str, actual_tokens: int) -> bool:
        if actual_tokens < 0:
            raise ValueError("actual_tokens must not be negative")
        now = self._now()
        record = self._records.pop(reservation_id, None)
        if record is None or record.expires <= now:
            return False
        for index, held in enumerate(record.held, start=1):
            member = f"{record.token}:{index}"
            entry = self._entries.get(held.key)
            if held.kind == "in_flight":
                if isinstance(entry, _Leases):
                    entry.until.pop(member, None)
                    if not entry.until:  # as Redis drops an emptied ZSET
                        del self._entries[held.key]
            elif held.kind == "tokens" and actual_tokens != held.amount:
                self._adjust(held, entry, member, actual_tokens, now)
        return True

    async def usage(self, charges: Sequence[Charge]) -> tuple[LimitState, ...]:
        validate(charges)
        now = self._now()
        return tuple(_state(c.limit, *self._read(c, now)) for c in charges)

    async def reset(self, keys: Sequence[str]) -> int:
        now = self._now()
        cleared = 0
        for key in dict.fromkeys(keys):
            entry = self._entries.pop(key, None)
            if entry is not None and entry.expires > now:
                cleared += 1
        return cleared

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # ---- internals ---------------------------------------------------------------------

    def _now(self) -> int:
        now = int(self._clock() * 1000)
        if now >= self._next_sweep:
            self._sweep(now)
        return now

    def _sweep(self, now: int) -> None:
        """Drop every expired entry and reservation, touched or not."""
        self._entries = {k: e for k, e in self._entries.items() if e.expires > now}
        self._records = {k: r for k, r in self._records.items() if r.expires > now}
        self._next_sweep = now + SWEEP_EVERY_MS

    def _read(self, charge: Charge, now: int) -> tuple[int, int]:
        """The limit's use and reset_ms now, before this reservation; prunes what aged out."""
        entry = self._entries.get(charge.key)
        if charge.kind == "in_flight":
            if not isinstance(entry, _Leases):
                return 0, 0
            entry.until = {m: t for m, t in entry.until.items() if t > now}
            if not entry.until:
                del self._entries[charge.key]
                return 0, 0
            return len(entry.until), min(entry.until.values()) - now
        if charge.window.kind == "rolling":
            if not isinstance(entry, _Rolling):
                return 0, 0
            length = charge.window.seconds * 1000
            aged = bisect.bisect_right(entry.entries, now - length, key=lambda e: e[0])
            for _, member in entry.entries[:aged]:
                entry.total -= entry.amounts.pop(member)
            del entry.entries[:aged]
            if entry.entries:
                return max(entry.total, 0), entry.entries[0][0] + length - now
            return max(entry.total, 0), 0
        start, end = window_bounds(charge.window, now)
        if isinstance(entry, _Counter) and entry.start == start:
            return entry.used, end - now
        return 0, end - now

    def _write(self, charge: Charge, amount: int, member: str, now: int) -> tuple[int, int, int]:
        """Charge one limit: (window start or log time, reset_ms, how long it matters)."""
        entry = self._entries.get(charge.key)
        if charge.kind == "in_flight":
            length = _lease_ms(charge, self._settle_within_ms)
            if not isinstance(entry, _Leases):
                entry = self._entries[charge.key] = _Leases({}, 0)
            entry.until[member] = now + length
            entry.expires = max(entry.expires, now + length)
            return 0, length, length
        if charge.window.kind == "rolling":
            length = charge.window.seconds * 1000
            if not isinstance(entry, _Rolling):
                entry = self._entries[charge.key] = _Rolling([], {}, 0, 0)
            bisect.insort(entry.entries, (now, member))
            entry.amounts[member] = amount
            entry.total += amount
            entry.expires = max(entry.expires, now + length)
            return now, length, length
        start, end = window_bounds(charge.window, now)
        if isinstance(entry, _Counter) and entry.start == start:
            entry.used += amount
            entry.expires = end + MARGIN_MS
        else:
            self._entries[charge.key] = _Counter(start, amount, end + MARGIN_MS)
        return start, end - now, end - now

    def _adjust(
        self, held: _Held, entry: _Entry | None, member: str, actual: int, now: int
    ) -> None:
        """Move a settled ``tokens`` charge to ``actual``, if its window is still current."""
        if held.window.kind == "rolling":
            length = held.window.seconds * 1000
            if not isinstance(entry, _Rolling) or member not in entry.amounts:
                return
            if held.start <= now - length:
                return
            entry.total = max(entry.total + actual - entry.amounts[member], 0)
            if actual > 0:
                entry.amounts[member] = actual
            else:
                del entry.amounts[member]
                entry.entries.remove((held.start, member))
        elif (
            isinstance(entry, _Counter)
            and entry.start == held.start
            and window_bounds(held.window, now)[0] == held.start
        ):
            entry.used = max(entry.used + actual - held.amount, 0)


def _state(limit: int, used: int, reset_ms: int) -> LimitState:
    return LimitState(limit, used, max(limit - used, 0), max(reset_ms, 0))
