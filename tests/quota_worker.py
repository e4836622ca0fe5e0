"""One OS process of the quota concurrency test: many concurrent reserves against Redis.

Run as ``python -m tests.quota_worker SPEC_JSON``. It connects, prints ``ready``, waits for
a line on stdin (so every worker starts at once), fires its reserves ``batch`` at a time
with ``asyncio.gather`` and prints one JSON list of ``[partition, amount, admitted]``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from authz_service.layers.cost.store import Charge, RedisStore, Window, hash_tag

FOREVER = Window("fixed", 1_000_000_000)
"""Does not roll over during the test, so every counter only grows."""
HOUR = Window("rolling", 3600)


def limits_of(index: int) -> tuple[int, int, int]:
    """Partition ``index``'s (fixed tokens, rolling tokens, requests) limits: partitions
    0-1 run out of fixed-window tokens, 2-3 of rolling-window tokens, 4-5 of requests
    (demand is ~1000 reserves of 1-100 tokens over 6 partitions)."""
    binding = index // 2
    tokens = 1500 + 300 * index
    return (
        tokens if binding == 0 else 100_000,
        tokens if binding == 1 else 100_000,
        25 + index if binding == 2 else 1000,
    )


def charges_for(partition: str, index: int, amount: int) -> list[Charge]:
    fixed, rolling, requests = limits_of(index)
    prefix = f"authz:{hash_tag(partition)}"
    return [
        Charge(f"{prefix}:tokens-day", "tokens", FOREVER, fixed, amount),
        Charge(f"{prefix}:tokens-hour", "tokens", HOUR, rolling, amount),
        Charge(f"{prefix}:requests", "requests", FOREVER, requests, 1),
    ]


async def work(spec: dict[str, Any]) -> list[tuple[str, int, bool]]:
    store = RedisStore.from_url(spec["url"], cluster=spec["cluster"], timeout_s=10.0)
    partitions: list[str] = spec["partitions"]
    rng = random.Random(spec["seed"])
    try:
        await store.ping()
        print("ready", flush=True)
        sys.stdin.readline()
        results: list[tuple[str, int, bool]] = []
        for _ in range(spec["count"] // spec["batch"]):
            plan = [
                (rng.randrange(len(partitions)), rng.randint(1, 100)) for _ in range(spec["batch"])
            ]
            outcomes = await asyncio.gather(
                *(
                    store.reserve(partitions[i], charges_for(partitions[i], i, amount))
                    for i, amount in plan
                )
            )
            results += [
                (partitions[i], amount, o.admitted)
                for (i, amount), o in zip(plan, outcomes, strict=True)
            ]
        return results
    finally:
        await store.close()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(work(json.loads(sys.argv[1])))), flush=True)
