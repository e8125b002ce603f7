"""The router sends each agent's requests to the shard that owns it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import aiohttp

from agentmem.directory import Directory, ShardEntry, partition_for
from tests.controlplane.conftest import free_port
from tests.kafka.conftest import PARTITIONS, Broker, Client, NodeProcess, RedisServer, run


def test_router_forwards_to_the_owning_shard_and_follows_the_directory(
    kafka: Broker,
    topic: str,
    redis_factory: Callable[..., RedisServer],
    node_factory: Callable[..., NodeProcess],
    tmp_path: Path,
) -> None:
    path = tmp_path / "directory.json"
    # shard 0 owns the even partitions, shard 1 the odd ones
    table = tuple(p % 2 for p in range(PARTITIONS))
    ports = [free_port(), free_port()]
    shards = tuple(ShardEntry(i, f"s{i}", f"127.0.0.1:{ports[i]}") for i in range(2))
    path.write_text(Directory("demo", "ns", topic, 1, table, shards).to_json())
    nodes = []
    for shard in range(2):
        node = NodeProcess(
            kafka, topic, redis_factory().url, tmp_path / f"n{shard}.log",
            shard=str(shard), directory_file=str(path),
        )  # fmt: skip
        node.port = ports[shard]
        nodes.append(node.start())
    router_port = free_port()
    log = (tmp_path / "router.log").open("wb")
    router = subprocess.Popen(
        [sys.executable, "-m", "agentmem", "router", "--directory-file", str(path),
         "--listen", f"127.0.0.1:{router_port}", "--no-auth"],
        stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{router_port}/readyz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        agents = [f"agent-{i}" for i in range(40)]

        async def scenario() -> None:
            async with aiohttp.ClientSession() as s:
                for agent in agents:
                    c = Client(s, f"http://127.0.0.1:{router_port}", agent=agent)
                    status, body = await c.put("k", {"agent": agent})
                    assert status == 200, body
                    status, got = await c.get("k", min_version=body["version"])
                    assert got["value"] == {"agent": agent}
                # each write landed on its owner: read it there directly
                for agent in agents:
                    owner = partition_for("acme", agent, PARTITIONS) % 2
                    status, got = await Client(s, nodes[owner].url, agent=agent).get("k")
                    assert status == 200 and got["value"] == {"agent": agent}
                # bad names are refused by the router itself
                status, body = await Client(s, f"http://127.0.0.1:{router_port}").raw(
                    "GET", "/v1/tenants/bad!/agents/a/keys/k"
                )
                assert status == 400 and body["error"] == "invalid_name"

        run(scenario())
    finally:
        router.send_signal(signal.SIGTERM)
        router.wait(timeout=30)
        log.close()
        for node in nodes:
            node.kill(signal.SIGTERM)
