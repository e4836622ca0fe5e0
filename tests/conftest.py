from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from authz_service.devstack.idp import mint_token
from authz_service.devstack.stack import Ports, Stack
from tests.redis_cluster import redis_cluster, standalone_redis


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private redis-server for the session, empty at the start."""
    with standalone_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A 3-master Redis Cluster on loopback, shared by the tests that need one."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        yield f"redis://127.0.0.1:{ports[0]}"


@pytest.fixture(scope="session")
def demo_stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    """The demo stack of `make run` (Envoy, service, mock upstreams) on free ports, its
    quotas kept in the session's Redis (tests use their own subjects: counters never mix).

    The service records every CheckRequest Envoy sends, so tests can replay them."""
    run_dir: Path = tmp_path_factory.mktemp("stack")
    with Stack(
        run_dir,
        Ports.free(),
        env={"REDIS_URL": redis_url},
        service_args=("--record", str(run_dir / "requests.jsonl")),
    ) as stack:
        yield stack


@pytest.fixture(scope="session")
def demo_token(demo_stack: Stack) -> str:
    """A valid token from the stack's demo identity provider."""
    return mint_token(demo_stack.idp_dir, issuer=demo_stack.issuer, subject="alice", tier="pro")
