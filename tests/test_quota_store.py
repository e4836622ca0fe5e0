"""One behaviour suite for every quota store: the embedded one, a real Redis and a real
3-master Redis Cluster, so the stores cannot drift apart."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from redis.cluster import RedisCluster

from authz_service.layers.cost.store import (
    Charge,
    ChargeKind,
    LimitState,
    MemoryStore,
    QuotaStore,
    RedisStore,
    Window,
    hash_tag,
)
from authz_service.layers.cost.store.memory import SWEEP_EVERY_MS
from authz_service.layers.cost.store.redis_store import LOG_SUFFIX
from tests.redis_cluster import (
    delete_partitions,
    partition_keys,
    raw_client,
)

LONG = Window("fixed", 1_000_000_000)
"""A fixed window that will not roll over during a test (its next edge is in 2033)."""
HOUR = Window("rolling", 3600)


@dataclass
class Backend:
    """Makes stores of one kind and looks at what they left in Redis."""

    name: str
    url: str | None = None

    @property
    def cluster(self) -> bool:
        return self.name == "cluster"

    def store(self, settle_within_s: int = 3600) -> QuotaStore:
        if self.url is None:
            return MemoryStore(settle_within_s=settle_within_s)
        return RedisStore.from_url(
            self.url, cluster=self.cluster, timeout_s=2.0, settle_within_s=settle_within_s
        )

    def raw(self) -> redis.Redis | RedisCluster:
        assert self.url is not None
        return raw_client(self.url, self.cluster)

    def keys(self, partition: str) -> dict[str, int]:
        """Every Redis key of the partition, with its PTTL."""
        client = self.raw()
        try:
            return {name: int(client.pttl(name)) for name in partition_keys(client, partition)}
        finally:
            client.close()

    def forget(self, *partitions: str) -> None:
        if self.url is not None:
            delete_partitions(self.url, self.cluster, list(partitions))


@pytest.fixture(params=["memory", "redis", "cluster"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory")
    url = request.getfixturevalue("cluster_url" if request.param == "cluster" else "redis_url")
    return Backend(request.param, url)


@pytest.fixture
def partition(backend: Backend) -> Iterator[str]:
    """A partition no other test (or earlier run) uses; its keys are removed afterwards."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    yield name
    backend.forget(name)


def key(partition: str, name: str) -> str:
    return f"authz:{hash_tag(partition)}:{name}"


def charge(partition: str, name: str, limit: int, amount: int = 1, window: Window = LONG) -> Charge:
    kind: ChargeKind = "tokens"
    if name.startswith("req"):
        kind = "requests"
    elif name.startswith("lease"):
        kind = "in_flight"
    return Charge(key(partition, name), kind, window, limit, amount)


def sized(charges: list[Charge], amount: int) -> list[Charge]:
    return [Charge(c.key, c.kind, c.window, c.limit, amount) for c in charges]


def used(states: tuple[LimitState, ...]) -> list[int]:
    return [s.used for s in states]


def run(
    backend: Backend,
    scenario: Callable[[QuotaStore], Awaitable[None]],
    settle_within_s: int = 3600,
) -> None:
    """Run one scenario on a fresh store (its client bound to this event loop)."""

    async def main() -> None:
        store = backend.store(settle_within_s)
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


async def window_start(store: QuotaStore, charges: list[Charge]) -> None:
    """Wait for a fresh fixed window when the current one ends too soon for the test."""
    reset_ms = (await store.usage(charges))[0].reset_ms
    if reset_ms < 400:
        await asyncio.sleep(reset_ms / 1000 + 0.02)


def test_all_or_nothing_across_limits(backend: Backend, partition: str) -> None:
    limits = [
        charge(partition, "a", 100),
        charge(partition, "b", 10),
        charge(partition, "req", 2),
    ]

    async def scenario(store: QuotaStore) -> None:
        first = await store.reserve(partition, sized(limits, 8))
        assert first.admitted and first.exceeded is None
        assert first.reservation_id and first.reservation_id.startswith(partition + ".")
        assert used(first.states) == [8, 8, 1]
        assert [s.remaining for s in first.states] == [92, 2, 1]

        over_b = await store.reserve(partition, sized(limits, 5))
        assert not over_b.admitted and over_b.reservation_id is None
        assert over_b.exceeded == 1
        assert used(over_b.states) == [8, 8, 1]  # nothing charged, not even `a`
        assert used(await store.usage(limits)) == [8, 8, 1]

        second = await store.reserve(partition, sized(limits, 2))
        assert second.admitted and used(second.states) == [10, 10, 2]
        over_requests = await store.reserve(partition, sized(limits, 0))
        assert over_requests.exceeded == 2  # tokens fit (0), the request count does not
        assert used(await store.usage(limits)) == [10, 10, 2]

    run(backend, scenario)


def test_fixed_window_rolls_over(backend: Backend, partition: str) -> None:
    limits = [charge(partition, "a", 3, window=Window("fixed", 1))]

    async def scenario(store: QuotaStore) -> None:
        await window_start(store, limits)
        assert (await store.reserve(partition, sized(limits, 3))).admitted
        full = await store.reserve(partition, sized(limits, 1))
        assert not full.admitted and 0 < full.states[0].reset_ms <= 1000
        assert full.states[0].used == 3
        await asyncio.sleep(full.states[0].reset_ms / 1000 + 0.05)
        fresh = await store.reserve(partition, sized(limits, 3))
        assert fresh.admitted and fresh.states[0].used == 3

    run(backend, scenario)


def test_rolling_window_is_exact(backend: Backend, partition: str) -> None:
    """Capacity comes back entry by entry as each ages out, not all at once."""
    limits = [charge(partition, "a", 10, window=Window("rolling", 1))]

    async def scenario(store: QuotaStore) -> None:
        first = await store.reserve(partition, sized(limits, 6))
        assert first.admitted and first.states[0].reset_ms == 1000
        await asyncio.sleep(0.5)
        second = await store.reserve(partition, sized(limits, 4))
        assert second.admitted and second.states[0].used == 10
        assert 0 < second.states[0].reset_ms <= 600  # the first entry ages out first
        full = await store.reserve(partition, sized(limits, 1))
        assert not full.admitted
        await asyncio.sleep(full.states[0].reset_ms / 1000 + 0.05)
        # the 6 aged out, the 4 are still in the window
        assert used(await store.usage(limits)) == [4]
        too_much = await store.reserve(partition, sized(limits, 7))
        assert not too_much.admitted and too_much.states[0].used == 4
        assert (await store.reserve(partition, sized(limits, 6))).admitted

    run(backend, scenario)


def test_calendar_month_resets_at_the_next_utc_month(backend: Backend, partition: str) -> None:
    limits = [charge(partition, "a", 1000, window=Window("calendar_month"))]

    async def scenario(store: QuotaStore) -> None:
        outcome = await store.reserve(partition, sized(limits, 5))
        now = datetime.now(UTC)
        following = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
        expected_ms = (following - now).total_seconds() * 1000
        assert outcome.admitted and outcome.states[0].used == 5
        assert abs(outcome.states[0].reset_ms - expected_ms) < 5000
        assert used(await store.usage(limits)) == [5]

    run(backend, scenario)


def test_in_flight_lease_released_by_settle_or_expiry(backend: Backend, partition: str) -> None:
    limits = [charge(partition, "lease", 1, window=Window("rolling", 1))]

    async def scenario(store: QuotaStore) -> None:
        first = await store.reserve(partition, limits)
        assert first.admitted and first.reservation_id
        assert first.states[0].reset_ms == 1000
        busy = await store.reserve(partition, limits)
        assert not busy.admitted and busy.exceeded == 0 and 0 < busy.states[0].reset_ms <= 1000
        assert await store.settle(first.reservation_id, 0)
        assert used(await store.usage(limits)) == [0]

        held = await store.reserve(partition, limits)  # never settled
        assert held.admitted
        assert not (await store.reserve(partition, limits)).admitted
        await asyncio.sleep(held.states[0].reset_ms / 1000 + 0.05)
        assert used(await store.usage(limits)) == [0]
        assert (await store.reserve(partition, limits)).admitted

    run(backend, scenario)


def test_settle_refunds_and_charges_extra(backend: Backend, partition: str) -> None:
    limits = [
        charge(partition, "fixed", 1000),
        charge(partition, "rolling", 1000, window=HOUR),
        charge(partition, "month", 1000, window=Window("calendar_month")),
        charge(partition, "req", 100),
    ]

    async def scenario(store: QuotaStore) -> None:
        first = await store.reserve(partition, sized(limits, 100))
        assert first.reservation_id and await store.settle(first.reservation_id, 30)
        assert used(await store.usage(limits)) == [30, 30, 30, 1]
        second = await store.reserve(partition, sized(limits, 50))
        assert second.reservation_id and await store.settle(second.reservation_id, 80)
        assert used(await store.usage(limits)) == [110, 110, 110, 2]
        third = await store.reserve(partition, sized(limits, 10))
        assert third.reservation_id and await store.settle(third.reservation_id, 0)
        assert used(await store.usage(limits)) == [110, 110, 110, 3]
        # what a refund freed can be reserved again, to the token
        assert (await store.reserve(partition, sized(limits, 890))).admitted
        assert not (await store.reserve(partition, sized(limits, 1))).admitted

    run(backend, scenario)


def test_settle_is_idempotent(backend: Backend, partition: str) -> None:
    limits = [
        charge(partition, "a", 1000),
        charge(partition, "r", 1000, window=HOUR),
        charge(partition, "lease", 5, window=Window("rolling", 60)),
    ]

    async def scenario(store: QuotaStore) -> None:
        outcome = await store.reserve(partition, sized(limits, 100))
        assert outcome.reservation_id
        assert await store.settle(outcome.reservation_id, 40)
        after = await store.usage(limits)
        assert used(after) == [40, 40, 0]
        assert not await store.settle(outcome.reservation_id, 40)
        assert not await store.settle(outcome.reservation_id, 500)
        assert used(await store.usage(limits)) == [40, 40, 0]
        assert not await store.settle(f"{partition}.0123456789abcdef", 1)
        assert not await store.settle("no-separator", 1)

    run(backend, scenario)


def test_settle_after_rollover_leaves_the_new_window_alone(
    backend: Backend, partition: str
) -> None:
    second = [charge(partition, "s", 100, window=Window("fixed", 1))]
    limits = [*second, charge(partition, "long", 1000)]

    async def scenario(store: QuotaStore) -> None:
        await window_start(store, second)
        old = await store.reserve(partition, sized(limits, 50))
        assert old.reservation_id
        await asyncio.sleep(old.states[0].reset_ms / 1000 + 0.05)
        new = await store.reserve(partition, sized(limits, 20))
        assert used(new.states) == [20, 70]
        assert await store.settle(old.reservation_id, 0)
        # the 1 s window it was charged to is gone: the new one keeps its 20
        assert used(await store.usage(limits)) == [20, 20]

    run(backend, scenario)


def test_unsettled_reservation_counts_in_full_after_settle_within(
    backend: Backend, partition: str
) -> None:
    limits = [charge(partition, "a", 1000), charge(partition, "r", 1000, window=HOUR)]

    async def scenario(store: QuotaStore) -> None:
        outcome = await store.reserve(partition, sized(limits, 100))
        assert outcome.reservation_id
        await asyncio.sleep(1.05)
        assert not await store.settle(outcome.reservation_id, 1)
        assert used(await store.usage(limits)) == [100, 100]

    run(backend, scenario, settle_within_s=1)


def test_usage_changes_nothing(backend: Backend, partition: str) -> None:
    limits = [
        charge(partition, "a", 100),
        charge(partition, "r", 100, window=HOUR),
        charge(partition, "lease", 3, window=Window("rolling", 60)),
        charge(partition, "month", 100, window=Window("calendar_month")),
    ]
    unused = [charge(partition, "never", 10), charge(partition, "never-r", 10, window=HOUR)]

    async def scenario(store: QuotaStore) -> None:
        await store.reserve(partition, sized(limits, 7))
        before = snapshot(backend, store, partition)
        assert before  # something to compare
        first = await store.usage(sized(limits + unused, 99))  # amount is ignored
        second = await store.usage(limits + unused)
        assert used(first) == used(second) == [7, 7, 1, 7, 0, 0]
        assert [s.remaining for s in first] == [93, 93, 2, 93, 10, 10]
        assert first[5].reset_ms == 0  # an empty rolling window frees nothing
        assert snapshot(backend, store, partition) == before

    run(backend, scenario)


def snapshot(backend: Backend, store: QuotaStore, partition: str) -> Any:
    """What the store holds for the partition (memory: how many entries)."""
    if isinstance(store, MemoryStore):
        return store.held()
    client = backend.raw()
    try:
        return {name: client.dump(name) for name in partition_keys(client, partition)}
    finally:
        client.close()


def test_reset_forgets_usage(backend: Backend, partition: str) -> None:
    limits = [
        charge(partition, "a", 100),
        charge(partition, "r", 100, window=HOUR),
        charge(partition, "keep", 100),
    ]

    async def scenario(store: QuotaStore) -> None:
        await store.reserve(partition, sized(limits, 9))
        cleared = await store.reset([limits[0].key, limits[1].key, key(partition, "never")])
        assert cleared == 2
        assert used(await store.usage(limits)) == [0, 0, 9]
        assert await store.reset([limits[0].key]) == 0

    run(backend, scenario)


def test_usage_and_reset_across_partitions(backend: Backend) -> None:
    """Charges of several partitions (different slots, on a cluster different nodes)."""
    partitions = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(6)]
    limits = [
        charge(p, n, 100, window=w) for p in partitions for n, w in [("f", LONG), ("r", HOUR)]
    ]

    async def scenario(store: QuotaStore) -> None:
        for index, name in enumerate(partitions):
            mine = [c for c in limits if hash_tag(name) in c.key]
            assert (await store.reserve(name, sized(mine, index + 1))).admitted
        states = await store.usage(limits)
        assert used(states) == [n for n in range(1, 7) for _ in range(2)]
        assert await store.reset([c.key for c in limits]) == 12
        assert used(await store.usage(limits)) == [0] * 12

    try:
        run(backend, scenario)
    finally:
        backend.forget(*partitions)


@pytest.mark.parametrize("backend", ["redis", "cluster"], indirect=True)
def test_every_redis_key_expires(backend: Backend, partition: str) -> None:
    limits = [
        charge(partition, "fixed", 100, window=Window("fixed", 60)),
        charge(partition, "month", 100, window=Window("calendar_month")),
        charge(partition, "rolling", 100, window=Window("rolling", 30)),
        charge(partition, "lease", 3, window=Window("rolling", 20)),
    ]
    rolling, lease = limits[2].key, limits[3].key

    async def scenario(store: QuotaStore) -> None:
        settled = await store.reserve(partition, sized(limits, 5))
        kept = await store.reserve(partition, sized(limits, 5))
        assert settled.reservation_id and kept.reservation_id
        assert await store.settle(settled.reservation_id, 1)
        month_ms = (await store.usage(limits))[1].reset_ms
        ttls = backend.keys(partition)
        assert set(ttls) == {
            *(c.key for c in limits),
            rolling + LOG_SUFFIX,
            f"authz:{hash_tag(partition)}:res:{kept.reservation_id.split('.')[1]}",
        }
        assert all(ttl > 0 for ttl in ttls.values()), ttls
        assert ttls[limits[0].key] <= 61_000
        assert ttls[rolling] <= 30_000 and ttls[rolling + LOG_SUFFIX] <= 30_000
        assert ttls[lease] <= 20_000
        assert month_ms < ttls[limits[1].key] <= month_ms + 1000
        record = next(ttl for name, ttl in ttls.items() if ":res:" in name)
        assert 90_000 < record <= 100_000  # settle_within_s caps the month's reservation

    run(backend, scenario, settle_within_s=100)


@pytest.mark.parametrize("backend", ["cluster"], indirect=True)
def test_cluster_reloads_a_flushed_script(backend: Backend, partition: str) -> None:
    """NOSCRIPT on every node: the registered script is loaded again, transparently
    (flushed only on the test's own cluster, never on a shared Redis)."""
    limits = [charge(partition, "a", 100)]

    async def scenario(store: QuotaStore) -> None:
        assert (await store.reserve(partition, limits)).admitted
        client = backend.raw()
        try:
            client.script_flush()
        finally:
            client.close()
        assert (await store.reserve(partition, limits)).admitted
        assert used(await store.usage(limits)) == [2]

    run(backend, scenario)


class FakeClock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("at", "reset_ms"),
    [
        (datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC), 1000),
        (datetime(2028, 2, 28, 0, 0, tzinfo=UTC), 2 * 86_400_000),  # leap year
        (datetime(2027, 2, 28, 23, 0, tzinfo=UTC), 3_600_000),
        (datetime(2026, 4, 1, 0, 0, tzinfo=UTC), 30 * 86_400_000),
    ],
)
def test_memory_month_edges(at: datetime, reset_ms: int) -> None:
    store = MemoryStore(clock=FakeClock(at))
    limits = [Charge("authz:{m}:month", "tokens", Window("calendar_month"), 10, 1)]
    outcome = asyncio.run(store.reserve("m", limits))
    assert outcome.states[0].reset_ms == reset_ms


def test_memory_store_prunes_what_expired() -> None:
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    store = MemoryStore(clock=clock, settle_within_s=60)

    async def scenario() -> None:
        ids = []
        for n in range(300):
            name = f"p{n}"
            limits = [
                Charge(key(name, "f"), "tokens", Window("fixed", 1), 10, 5),
                Charge(key(name, "r"), "tokens", Window("rolling", 2), 10, 5),
                Charge(key(name, "lease"), "in_flight", Window("rolling", 5), 1, 1),
                Charge(key(name, "month"), "requests", Window("calendar_month"), 10, 1),
            ]
            outcome = await store.reserve(name, limits)
            assert outcome.reservation_id
            ids.append(outcome.reservation_id)
            clock.now += 0.001
        assert store.held() == 300 * 5
        clock.now += 61 + SWEEP_EVERY_MS / 1000
        await store.usage([])
        assert store.held() == 300  # only the month counters are still current
        assert not await store.settle(ids[0], 0)
        clock.now += 35 * 86_400
        await store.usage([])
        assert store.held() == 0

    asyncio.run(scenario())


def test_memory_store_prunes_a_touched_key() -> None:
    """Entries of one busy key age out as it is used, without waiting for a sweep."""
    clock = FakeClock(datetime(2026, 6, 1, tzinfo=UTC))
    store = MemoryStore(clock=clock)
    limits = [Charge("authz:{b}:r", "tokens", Window("rolling", 1), 10**9, 1)]

    async def scenario() -> None:
        for _ in range(5000):
            outcome = await store.reserve("b", limits)
            assert outcome.reservation_id and await store.settle(outcome.reservation_id, 1)
            clock.now += 0.01
        assert 99 <= used(await store.usage(limits))[0] <= 101

    asyncio.run(scenario())
    assert store.held() <= 102  # 1 s of entries, the rest pruned as the key was used


def test_many_concurrent_reserves_on_a_fresh_store(backend: Backend) -> None:
    """The very first calls of a new store (a cluster client still discovering its slots)
    arrive all at once, over partitions in different slots: each limit admits exactly."""
    partitions = [f"t-{uuid.uuid4().hex[:12]}" for _ in range(3)]

    async def scenario(store: QuotaStore) -> None:
        outcomes = await asyncio.gather(
            *(store.reserve(p, [charge(p, "a", 15)]) for p in partitions for _ in range(20))
        )
        for index in range(3):
            mine = outcomes[index * 20 : index * 20 + 20]
            assert sum(o.admitted for o in mine) == 15

    try:
        run(backend, scenario)
    finally:
        backend.forget(*partitions)
