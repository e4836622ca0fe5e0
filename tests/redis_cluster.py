"""Throwaway Redis servers on loopback: a 3-master cluster (for tests that must see real
slots) and a standalone server. Each test session starts empty: counters left by an earlier
run (on the machine's Redis they outlive it, a day for a daily budget) cannot fail it."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path

import redis
from redis.cluster import RedisCluster


def free_port() -> int:
    """A loopback port nobody listens on (closed again before returning)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _free_node_port() -> int:
    """A free port whose cluster bus port (+10000) is free and valid too."""
    while True:
        port = random.randrange(20_000, 40_000)
        try:
            with socket.socket() as data, socket.socket() as bus:
                data.bind(("127.0.0.1", port))
                bus.bind(("127.0.0.1", port + 10_000))
        except OSError:
            continue
        return port


def _wait_until(what: str, check: Callable[[], object], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"redis: {what} not reached in {timeout_s} s")
        time.sleep(0.05)


def raw_client(url: str, cluster: bool) -> redis.Redis | RedisCluster:
    """A plain synchronous client, to look at (and clean up) what a store left."""
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def partition_keys(client: redis.Redis | RedisCluster, partition: str) -> list[str]:
    """Every key of a partition (on a cluster, asked of every master)."""
    pattern = "authz:{" + partition + "}:*"
    if isinstance(client, RedisCluster):
        return [str(n) for n in client.keys(pattern, target_nodes=RedisCluster.PRIMARIES)]
    return [str(n) for n in client.keys(pattern)]


def delete_partitions(url: str, cluster: bool, partitions: list[str]) -> None:
    """Remove every key the partitions left (counters, logs, reservations)."""
    client = raw_client(url, cluster)
    try:
        for partition in partitions:
            for name in partition_keys(client, partition):
                client.delete(name)
    finally:
        client.close()


@contextmanager
def standalone_redis(directory: Path) -> Iterator[str]:
    """A private, empty redis-server without persistence; its URL."""
    with ExitStack() as stack:
        yield f"redis://127.0.0.1:{_start(stack, directory, _free_node_port(), cluster=False)}"


@contextmanager
def redis_cluster(directory: Path, masters: int = 3) -> Iterator[list[int]]:
    """Start ``masters`` cluster-enabled redis-servers, join them, yield their ports, and
    stop them (even when the test or the start-up failed)."""
    with ExitStack() as stack:
        ports = [_start(stack, directory, _free_node_port(), cluster=True) for _ in range(masters)]
        subprocess.run(
            ["redis-cli", "--cluster", "create"]
            + [f"127.0.0.1:{port}" for port in ports]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in ports:
            client = stack.enter_context(redis.Redis(host="127.0.0.1", port=port, socket_timeout=2))
            _wait_until("cluster_state:ok", partial(_cluster_ready, client, masters))
        yield ports


def _start(stack: ExitStack, directory: Path, port: int, *, cluster: bool) -> int:
    """One redis-server without persistence, stopped when ``stack`` closes; its port."""
    node_dir = directory / f"redis-{port}"
    node_dir.mkdir()
    log = stack.enter_context((node_dir / "redis.log").open("wb"))
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(node_dir)]
    if cluster:
        command += ["--cluster-enabled", "yes"]
        command += ["--cluster-config-file", str(node_dir / "nodes.conf")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_process, process)
    client = stack.enter_context(redis.Redis(host="127.0.0.1", port=port, socket_timeout=2))
    _wait_until(f"redis-server on {port} answering", client.ping)
    return port


def _cluster_ready(client: redis.Redis, masters: int) -> bool:
    info = client.cluster("INFO")
    return bool(info["cluster_state"] == "ok" and int(info["cluster_known_nodes"]) == masters)


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout_s``."""
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
