"""What a quota store promises: an all-or-nothing reservation across several limits.

The cost layer turns a request into :class:`Charge`s (one per applicable limit, each with
its own counter key) and asks a store to admit all of them or none. Two stores keep the
same semantics: Redis (one Lua script per decision, server time, every key of one
decision in one hash slot) and the embedded in-memory store for a single replica.

Windows:

* ``fixed`` — epoch-aligned windows of ``seconds`` (so a day starts at 00:00 UTC);
* ``calendar_month`` — the UTC calendar month;
* ``rolling`` — the last ``seconds``, exact (each reservation is logged until it ages out).

Kinds: ``tokens`` (the charge's ``amount``), ``requests`` (1 each), ``in_flight`` (a lease
of 1 held until the reservation is settled or ``window.seconds`` pass).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

WindowKind = Literal["fixed", "calendar_month", "rolling"]
ChargeKind = Literal["tokens", "requests", "in_flight"]

KEY_PREFIX = "authz"
RESERVATION_ID_SEPARATOR = "."


@dataclass(frozen=True, slots=True)
class Window:
    kind: WindowKind
    seconds: int = 0
    """Length of a ``fixed`` or ``rolling`` window, or an ``in_flight`` lease; 0 for a month."""


@dataclass(frozen=True, slots=True)
class Charge:
    """One limit's part of a reservation."""

    key: str
    """The counter's Redis key; every key of one reservation carries the same hash tag."""
    kind: ChargeKind
    window: Window
    limit: int
    amount: int
    """Tokens for ``tokens``; 1 for ``requests`` and ``in_flight``."""


@dataclass(frozen=True, slots=True)
class LimitState:
    """One limit as the store saw it (after this reservation, when it was admitted)."""

    limit: int
    used: int
    remaining: int
    reset_ms: int
    """Milliseconds until the window frees capacity: the end of a fixed window or month,
    the oldest entry of a rolling window or lease ageing out (0 when nothing is held)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    admitted: bool
    reservation_id: str | None
    """Set when admitted: pass it to :meth:`QuotaStore.settle`."""
    states: tuple[LimitState, ...]
    """One per charge, in the order given."""
    exceeded: int | None = None
    """Index of the first charge that did not fit (``None`` when admitted)."""


class StoreError(Exception):
    """The store could not answer (unreachable, timed out, broken reply)."""


def hash_tag(partition: str) -> str:
    """The ``{...}`` part of every key of one partition: Redis Cluster hashes only it."""
    return "{" + partition + "}"


def validate(charges: Sequence[Charge]) -> None:
    """Reject charges no store can count (both stores call this before deciding)."""
    for charge in charges:
        if charge.limit < 0 or charge.amount < 0:
            raise ValueError(f"{charge.key}: limit and amount must not be negative")
        needs_length = charge.kind != "in_flight" and charge.window.kind != "calendar_month"
        if needs_length and charge.window.seconds <= 0:
            raise ValueError(f"{charge.key}: a {charge.window.kind} window needs seconds > 0")


def new_reservation_id(partition: str) -> str:
    """A reservation id: its partition, then a random token."""
    return f"{partition}{RESERVATION_ID_SEPARATOR}{secrets.token_hex(8)}"


def reservation_key(reservation_id: str) -> str:
    """Where a reservation's record lives; its id starts with its partition."""
    partition, _, token = reservation_id.partition(RESERVATION_ID_SEPARATOR)
    return f"{KEY_PREFIX}:{hash_tag(partition)}:res:{token}"


class QuotaStore(Protocol):
    async def reserve(self, partition: str, charges: Sequence[Charge]) -> Outcome:
        """Admit every charge or none, atomically; the reservation id starts with
        ``partition`` (every charge key carries ``hash_tag(partition)``)."""
        ...

    async def settle(self, reservation_id: str, actual_tokens: int) -> bool:
        """Move each ``tokens`` counter of the reservation from the reserved amount to
        ``actual_tokens`` (refund or extra charge, in the window it was charged to, if that
        window is still current), release its ``in_flight`` leases. Idempotent: ``True``
        only for the call that settled it; unknown or expired ids are ``False``."""
        ...

    async def usage(self, charges: Sequence[Charge]) -> tuple[LimitState, ...]:
        """The current state of each limit, changing nothing (``amount`` is ignored)."""
        ...

    async def reset(self, keys: Sequence[str]) -> int:
        """Forget the usage of these counters; the number of counters that held usage."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StoreError` unless the store answers."""
        ...

    async def close(self) -> None: ...
