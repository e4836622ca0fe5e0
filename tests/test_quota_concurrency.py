"""Zero overshoot under real contention (several OS processes, many reserves in flight
each, on Redis and on a 3-master Redis Cluster), and a dead or stalled Redis answering
with StoreError within the timeout instead of hanging."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from authz_service.layers.cost.store import Charge, RedisStore, StoreError, Window
from tests.quota_worker import charges_for, limits_of
from tests.redis_cluster import delete_partitions, free_port

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 4
PER_WORKER = 250
BATCH = 50
PARTITIONS = 6


def spread_partitions() -> list[str]:
    """Partitions whose hash slots fall in each third of the slot space, i.e. on each
    master of a 3-master cluster made by ``redis-cli --cluster create``."""
    run = uuid.uuid4().hex[:8]
    names: list[str] = []
    candidate = 0
    while len(names) < PARTITIONS:
        name = f"c-{run}-{candidate}"
        candidate += 1
        if key_slot(name.encode()) * 3 // 16384 == len(names) % 3:
            names.append(name)
    return names


def run_workers(url: str, cluster: bool, partitions: list[str]) -> list[tuple[str, int, bool]]:
    """Start every worker, let them all go at once, collect what each was told."""
    workers = []
    try:
        for seed in range(WORKERS):
            spec = {
                "url": url,
                "cluster": cluster,
                "partitions": partitions,
                "seed": seed,
                "count": PER_WORKER,
                "batch": BATCH,
            }
            workers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.quota_worker", json.dumps(spec)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results: list[tuple[str, int, bool]] = []
        for worker in workers:
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == 0
            results += [(p, a, ok) for p, a, ok in json.loads(out)]
        return results
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def check_no_overshoot(
    store_of: Callable[[], RedisStore], partitions: list[str], results: list[tuple[str, int, bool]]
) -> None:
    """Per partition and limit: admitted ≤ limit, the counters hold exactly what was
    admitted, and every rejection was right when it happened.

    Counters only grow here (no settle, windows that do not roll), so a reservation
    rejected at some moment still overflows some limit at the end: ``final use + its
    amount > limit`` for at least one of its limits. That holds however the requests
    interleaved, so the assertion is exact and not timing-dependent."""
    assert len(results) == WORKERS * PER_WORKER

    async def usage() -> list[list[int]]:
        store = store_of()
        try:
            return [
                [s.used for s in await store.usage(charges_for(p, i, 0))]
                for i, p in enumerate(partitions)
            ]
        finally:
            await store.close()

    used = asyncio.run(usage())
    for index, partition in enumerate(partitions):
        limits = limits_of(index)
        mine = [(amount, ok) for p, amount, ok in results if p == partition]
        admitted = [amount for amount, ok in mine if ok]
        rejected = [amount for amount, ok in mine if not ok]
        totals = [sum(admitted), sum(admitted), len(admitted)]
        assert used[index] == totals, "counters lost or invented an update"
        for total, limit in zip(totals, limits, strict=True):
            assert total <= limit, f"{partition}: overshoot {total} > {limit}"
        assert rejected, f"{partition}: demand never exceeded a limit; the test proves nothing"
        for amount in rejected:
            assert (
                totals[0] + amount > limits[0]
                or totals[1] + amount > limits[1]
                or totals[2] + 1 > limits[2]
            ), f"{partition}: {amount} was rejected while every limit had room for it"


def test_no_overshoot_on_redis(redis_url: str) -> None:
    partitions = spread_partitions()

    def store_of() -> RedisStore:
        return RedisStore.from_url(redis_url, cluster=False, timeout_s=5.0)

    try:
        check_no_overshoot(store_of, partitions, run_workers(redis_url, False, partitions))
    finally:
        delete_partitions(redis_url, False, partitions)


def test_no_overshoot_on_redis_cluster(cluster_url: str) -> None:
    partitions = spread_partitions()

    async def nodes() -> set[str]:
        client = RedisCluster.from_url(cluster_url)
        try:
            await client.initialize()
            found = [client.get_node_from_key(f"{{{p}}}") for p in partitions]
            return {node.name for node in found if node is not None}
        finally:
            await client.aclose()

    assert len(asyncio.run(nodes())) == 3, "the partitions must live on every master"

    def store_of() -> RedisStore:
        return RedisStore.from_url(cluster_url, cluster=True, timeout_s=5.0)

    try:
        check_no_overshoot(store_of, partitions, run_workers(cluster_url, True, partitions))
    finally:
        delete_partitions(cluster_url, True, partitions)


# ---- an unreachable or stalled Redis ----------------------------------------------------

TIMEOUT_S = 0.1
CHARGES = [Charge("authz:{dead}:a", "tokens", Window("fixed", 60), 10, 1)]


@pytest.fixture
def stalled_port() -> Iterator[int]:
    """A port that accepts connections (the kernel completes the handshake) and never
    answers a byte."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(64)
        yield server.getsockname()[1]


def calls(store: RedisStore) -> list[Callable[[], Awaitable[object]]]:
    return [
        lambda: store.reserve("dead", CHARGES),
        lambda: store.settle("dead.0123456789abcdef", 1),
        lambda: store.usage(CHARGES),
        lambda: store.reset([CHARGES[0].key]),
        store.ping,
    ]


def assert_fails_fast(url: str, cluster: bool) -> None:
    async def main() -> None:
        store = RedisStore.from_url(url, cluster=cluster, timeout_s=TIMEOUT_S)
        try:
            for call in calls(store):
                started = time.monotonic()
                with pytest.raises(StoreError):
                    await call()
                assert time.monotonic() - started < 0.5
        finally:
            await store.close()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_unreachable_redis_raises_store_error_in_time(cluster: bool) -> None:
    assert_fails_fast(f"redis://127.0.0.1:{free_port()}", cluster)


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "cluster"])
def test_stalled_redis_raises_store_error_in_time(stalled_port: int, cluster: bool) -> None:
    assert_fails_fast(f"redis://127.0.0.1:{stalled_port}", cluster)


def test_nonsense_replies_raise_store_error() -> None:
    """A server that answers ``+OK`` to everything: replies the store cannot read."""

    async def main() -> None:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await reader.read(4096):
                writer.write(b"+OK\r\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}", cluster=False, timeout_s=1.0)
        try:
            for call in calls(store)[:4]:  # ping only asks for an answer, and gets one
                with pytest.raises(StoreError, match=r"unexpected|unreadable"):
                    await call()
        finally:
            await store.close()
            server.close()

    asyncio.run(main())
