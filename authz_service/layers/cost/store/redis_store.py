"""The Redis quota store: ``quota.lua`` decides a whole reservation in one round trip.

One EVALSHA per reserve (redis-py's registered script falls back to SCRIPT LOAD on
NOSCRIPT, on a single Redis and on a cluster), on Redis server time, with every key in
KEYS and all keys of one reservation in one hash slot (the caller's ``{partition}`` tag),
so it runs unchanged on Redis Cluster. Every failure surfaces as :class:`StoreError`
within ``timeout_s``, so the cost layer can fail closed (or fall back) instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from importlib.resources import files
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from authz_service.layers.cost.store.base import (
    RESERVATION_ID_SEPARATOR,
    Charge,
    LimitState,
    Outcome,
    StoreError,
    new_reservation_id,
    reservation_key,
    validate,
)

LOG_SUFFIX = ":log"
"""A rolling window's entries live in ``key + LOG_SUFFIX`` (same hash tag as ``key``)."""

_SCRIPT = files(__package__).joinpath("quota.lua").read_text(encoding="utf-8")
_T = TypeVar("_T")


class RedisStore:
    """:class:`~authz_service.layers.cost.store.base.QuotaStore` on Redis or Redis Cluster."""

    def __init__(
        self,
        client: Redis | RedisCluster,
        *,
        settle_within_s: int = 3600,
        timeout_s: float | None = None,
    ) -> None:
        """``timeout_s`` caps each call as a whole (connect, NOSCRIPT reload, cluster
        discovery included); ``None`` leaves it to the client's socket timeouts."""
        self._client = client
        self._script = client.register_script(_SCRIPT)
        self._settle_within_ms = settle_within_s * 1000
        self._timeout_s = timeout_s
        self._discovered = not isinstance(client, RedisCluster)
        self._discovering = asyncio.Lock()

    @classmethod
    def from_url(
        cls, url: str, *, cluster: bool, timeout_s: float, settle_within_s: int = 3600
    ) -> RedisStore:
        """A store with its own client: socket timeouts of ``timeout_s`` and no client
        retries, so a dead Redis costs one timeout, not several."""
        options: dict[str, Any] = {
            "socket_timeout": timeout_s,
            "socket_connect_timeout": timeout_s,
            "retry": Retry(NoBackoff(), 0),
        }
        client: Redis | RedisCluster = (
            RedisCluster.from_url(url, **options) if cluster else Redis.from_url(url, **options)
        )
        return cls(client, settle_within_s=settle_within_s, timeout_s=timeout_s)

    async def reserve(self, partition: str, charges: Sequence[Charge]) -> Outcome:
        validate(charges)
        reservation_id = new_reservation_id(partition)
        if not charges:
            return Outcome(True, reservation_id, ())
        args: list[str | int] = ["reserve", _token(reservation_id), self._settle_within_ms]
        for c in charges:
            args += [c.kind, c.window.kind, c.window.seconds, c.limit, c.amount]
        keys = [reservation_key(reservation_id), *_with_logs(c.key for c in charges)]
        reply = await self._run("reserve", lambda: self._script(keys=keys, args=args))
        if not isinstance(reply, list) or len(reply) != 2 + 4 * len(charges):
            raise StoreError(f"redis reserve: unexpected reply {reply!r}")
        numbers = _ints(reply)
        admitted, exceeded, states = bool(numbers[0]), numbers[1], _states(numbers[2:])
        if admitted:
            return Outcome(True, reservation_id, states)
        return Outcome(False, None, states, exceeded)

    async def settle(self, reservation_id: str, actual_tokens: int) -> bool:
        """Two round trips: the record names the keys, then the script settles them."""
        if actual_tokens < 0:
            raise ValueError("actual_tokens must not be negative")
        token = _token(reservation_id)
        if not token:
            return False
        record_key = reservation_key(reservation_id)
        raw = await self._run("settle", lambda: self._client.get(record_key))
        if raw is None:
            return False
        try:
            keys = [str(key) for key in json.loads(raw)["k"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"redis settle: unreadable reservation {record_key}") from exc
        args: list[str | int] = ["settle", token, actual_tokens]
        reply = await self._run(
            "settle", lambda: self._script(keys=[record_key, *_with_logs(keys)], args=args)
        )
        return bool(reply == 1)

    async def usage(self, charges: Sequence[Charge]) -> tuple[LimitState, ...]:
        """One script call per hash slot (usually one), none of which writes."""
        validate(charges)
        groups = _by_slot(range(len(charges)), lambda i: charges[i].key)

        async def one(indexes: list[int]) -> list[LimitState]:
            args: list[str | int] = ["usage"]
            for i in indexes:
                c = charges[i]
                args += [c.kind, c.window.kind, c.window.seconds, c.limit]
            keys = _with_logs(charges[i].key for i in indexes)
            reply = await self._script(keys=keys, args=args)
            if not isinstance(reply, list) or len(reply) != 4 * len(indexes):
                raise StoreError(f"redis usage: unexpected reply {reply!r}")
            return list(_states(_ints(reply)))

        found = await self._run("usage", lambda: asyncio.gather(*(one(g) for g in groups)))
        states: dict[int, LimitState] = {}
        for indexes, group_states in zip(groups, found, strict=True):
            states.update(zip(indexes, group_states, strict=True))
        return tuple(states[i] for i in range(len(charges)))

    async def reset(self, keys: Sequence[str]) -> int:
        """Deletes each counter (and its rolling log); counts the counters that existed."""
        groups = _by_slot(dict.fromkeys(keys), lambda key: key)

        async def one(group: list[str]) -> int:
            reply = await self._script(keys=_with_logs(group), args=["reset"])
            if not isinstance(reply, int):
                raise StoreError(f"redis reset: unexpected reply {reply!r}")
            return reply

        return sum(await self._run("reset", lambda: asyncio.gather(*(one(g) for g in groups))))

    async def ping(self) -> None:
        await self._run("ping", self._client.ping)

    async def close(self) -> None:
        await self._client.aclose()

    async def _discover(self) -> None:
        """Learn the cluster's slots once, before any command: redis-py's async cluster
        client, first used by many commands at once, closes connections under some of
        them ("Connection closed by server")."""
        if self._discovered:
            return
        async with self._discovering:
            if not self._discovered and isinstance(self._client, RedisCluster):
                await self._client.initialize()
                self._discovered = True

    async def _run(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
        """Make and await a Redis call within the deadline (after discovery, so nothing
        runs before it); every failure becomes StoreError."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._discover()
                return await call()
        except StoreError:
            raise
        except TimeoutError as exc:
            raise StoreError(f"redis {what}: no answer within {self._timeout_s} s") from exc
        except (RedisError, RedisClusterException, OSError) as exc:
            raise StoreError(f"redis {what}: {type(exc).__name__}: {exc}") from exc
        except Exception as exc:  # the client itself broke: still "could not answer"
            raise StoreError(f"redis {what}: client failure {type(exc).__name__}: {exc}") from exc


def _token(reservation_id: str) -> str:
    return reservation_id.partition(RESERVATION_ID_SEPARATOR)[2]


def _with_logs(keys: Iterable[str]) -> list[str]:
    """Each counter key followed by its rolling log's key: the script's KEYS layout."""
    return [name for key in keys for name in (key, key + LOG_SUFFIX)]


def _by_slot(items: Iterable[_T], key_of: Callable[[_T], str]) -> list[list[_T]]:
    """Items grouped by their key's cluster hash slot, so each script call stays in one."""
    groups: dict[int, list[_T]] = {}
    for item in items:
        groups.setdefault(key_slot(key_of(item).encode()), []).append(item)
    return list(groups.values())


def _ints(values: list[Any]) -> list[int]:
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError) as exc:
        raise StoreError(f"redis: unexpected reply {values!r}") from exc


def _states(numbers: list[int]) -> tuple[LimitState, ...]:
    """Flat (limit, used, remaining, reset_ms) quadruples, as the script returns them."""
    return tuple(LimitState(*numbers[i : i + 4]) for i in range(0, len(numbers), 4))
