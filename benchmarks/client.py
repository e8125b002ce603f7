"""What the SDK costs, and what direct routing saves: reads and writes per second
and p99 from one process at 64 concurrent requests, side by side in one run:

- the SDK (``AsyncMemory``) against a bare aiohttp client sending the same
  requests to the same owning shard (eventual reads, blind writes with a
  request id);
- the SDK sending straight to the owning shard against the SDK through the
  router.

    python benchmarks/client.py [--seconds 8] [--kafka HOST:PORT --redis URL]

Runs on a local cluster (``agentmem up``'s processes: 3 shards and a router;
the embedded log unless --kafka/--redis). Prints a line per measurement, then
one JSON line. Goals: the SDK at least 0.8x the bare client's rate; direct at
least 1.5x the router's.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from tests.net import free_port_run

from agentmem.client import AsyncMemory
from agentmem.directory import Directory, partition_for
from agentmem.local import LocalCluster

CONCURRENCY = 64
AGENTS = 64
KEYS = 16


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def measure(op: Callable[[int], Awaitable[None]], seconds: float) -> tuple[float, float]:
    """(requests per second, p99 ms) of ``op`` run by 64 tasks for ``seconds``."""
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def worker(w: int) -> None:
        i = w
        while time.monotonic() < stop:
            started = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - started)
            i += CONCURRENCY

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    return len(latencies) / elapsed, round(p99, 2)


async def run(cluster: LocalCluster, seconds: float) -> dict[str, object]:
    tenant = f"bench-{uuid.uuid4().hex[:6]}"
    directory = Directory.from_json((cluster.data / "directory.json").read_text())
    agents = [f"agent-{a}" for a in range(AGENTS)]
    address = [(agents[i % AGENTS], f"k{(i // AGENTS) % KEYS}") for i in range(AGENTS * KEYS)]

    def owner_url(agent: str) -> str:
        shard = directory.owner(partition_for(tenant, agent, directory.partitions))
        return f"http://{shard.endpoint}"

    out: dict[str, object] = {"concurrency": CONCURRENCY, "seconds_each": seconds}
    async with (
        AsyncMemory(
            cluster.router_url, tenant=tenant, routing="direct", token_file=cluster.token_file
        ) as direct,
        AsyncMemory(
            cluster.router_url, tenant=tenant, routing="router", token_file=cluster.token_file
        ) as routed,
        aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256),
            headers={"Authorization": f"Bearer {cluster.token_file.read_text().strip()}"},
        ) as bare,
    ):
        for agent, key in address:  # the data the reads find
            await direct.put(agent, key, {"n": 0, "text": "x" * 100})

        async def sdk_read(i: int) -> None:
            agent, key = address[i % len(address)]
            await direct.get(agent, key, consistency="eventual")

        async def router_read(i: int) -> None:
            agent, key = address[i % len(address)]
            await routed.get(agent, key, consistency="eventual")

        async def bare_read(i: int) -> None:
            agent, key = address[i % len(address)]
            url = f"{owner_url(agent)}/v1/tenants/{tenant}/agents/{agent}/keys/{key}"
            async with bare.get(url, params={"consistency": "eventual"}) as resp:
                assert resp.status == 200, resp.status
                await resp.json()

        body = {"n": 1, "text": "y" * 100}

        async def sdk_write(i: int) -> None:
            agent, key = address[i % len(address)]
            await direct.put(agent, key, body)

        async def bare_write(i: int) -> None:
            agent, key = address[i % len(address)]
            url = f"{owner_url(agent)}/v1/tenants/{tenant}/agents/{agent}/keys/{key}"
            async with bare.put(
                url, data=json.dumps(body),
                headers={"Content-Type": "application/json", "X-Request-Id": uuid.uuid4().hex},
            ) as resp:  # fmt: skip
                assert resp.status == 200, resp.status
                await resp.json()

        await measure(sdk_read, 1.0)  # warm connections and caches
        await measure(bare_read, 1.0)
        # Interleaved, twice each, so drift on the machine falls on both sides.
        results: dict[str, list[tuple[float, float]]] = {}
        for name, op in [("sdk_read", sdk_read), ("bare_read", bare_read),
                         ("router_read", router_read), ("sdk_write", sdk_write),
                         ("bare_write", bare_write)] * 2:  # fmt: skip
            rps, p99 = await measure(op, seconds)
            say(f"{name:<12} {rps:8.0f} req/s  p99 {p99:6.2f} ms")
            results.setdefault(name, []).append((rps, p99))
    for name, runs in results.items():
        out[f"{name}_rps"] = round(sum(r for r, _ in runs) / len(runs))
        out[f"{name}_p99_ms"] = round(max(p for _, p in runs), 2)
    out["direct_read_rps"] = out["sdk_read_rps"]
    out["sdk_over_bare_read"] = round(out["sdk_read_rps"] / out["bare_read_rps"], 3)  # type: ignore[operator]
    out["sdk_over_bare_write"] = round(out["sdk_write_rps"] / out["bare_write_rps"], 3)  # type: ignore[operator]
    out["direct_over_router_read"] = round(out["sdk_read_rps"] / out["router_read_rps"], 3)  # type: ignore[operator]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--kafka", help="Kafka bootstrap servers (default: the embedded log)")
    parser.add_argument("--redis", help="Redis URL for the nodes' state (default: in memory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentmem-bench-") as data:
        cluster = LocalCluster(
            data=Path(data), port=free_port_run(4), kafka=args.kafka, redis=args.redis,
            topic=f"agentmem.bench.{uuid.uuid4().hex[:8]}.events",
        )  # fmt: skip
        cluster.prepare()
        cluster.ensure_topic()
        try:
            cluster.start(io.StringIO())
            out = asyncio.run(run(cluster, args.seconds))
        finally:
            cluster.stop()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
