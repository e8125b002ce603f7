"""Vector search: latency and throughput of the index agentmem creates, beside
brute force over the same vectors in the same run, its recall, and how far the
index trails the log under write load.

    python benchmarks/search.py [--vectors 100000] [--dimensions 384] [--seconds 15]

Part 1 (the index): a Milvus Lite server (its own process, the API of a Milvus
server), the cluster's collection as a node creates it (HNSW, M 16,
efConstruction 200, COSINE; searched with ef 128), loaded with 100,000
clustered 384-dimensional vectors of one tenant spread over 16 partitions,
sealed and indexed. 500 queries from the same distribution, one at a time
(p50, p99, queries per second), with the filter every search carries (tenant,
partitions, expiry): over all 16 partitions (a tenant-wide search on a node
that holds them all: every one of the 100,000 vectors is a candidate), and
over one partition (an agent's own memory, ``partition_*``); then the same
queries by brute force (NumPy, one matrix product per query over the same
vectors) for queries per second and the exact top 10 that recall@10 is
measured against.

Part 2 (the lag): one memory node (the embedded log, state in memory; it writes
the index) on the same Milvus server, a fresh collection. 16 connections put
memories with their own 384-dimensional vectors for ``--seconds``, as fast as
the node takes them (or paced at ``--rate`` writes a second); a poller reads
the node's status every 10 ms, and each write's lag is the time from its
acknowledgement to the status showing its partition indexed past it (10 ms
resolution). Prints lines as it goes, then one JSON line.
Goals: search p99 < 50 ms, lag p99 < 1 s, recall >= 0.95.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.milvus import MilvusLite, clustered, exact_top
from tests.net import free_port

from agentmem.semantic import SemanticConfig
from agentmem.semantic.filters import Scope, expression
from agentmem.semantic.milvus import IndexRow, MilvusIndex

K, QUERIES, PARTITIONS = 10, 500, 16


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure_index(uri: str, server: MilvusLite, n: int, dims: int) -> dict[str, Any]:
    index = MilvusIndex(
        SemanticConfig.from_dict({"uri": uri, "dimensions": dims, "collection": "bench_search"}),
        PARTITIONS,
    )
    points = clustered(n + QUERIES, dims, clusters=500, seed=11)
    stored, queries = points[:n], points[n:]
    started = time.perf_counter()
    for start in range(0, n, 5000):
        chunk = range(start, min(n, start + 5000))
        for p in range(PARTITIONS):
            rows = [
                IndexRow(
                    "bench",
                    f"agent-{i % 1000}",
                    f"m{i}",
                    p,
                    i,
                    None,
                    "",
                    {"n": i},
                    stored[i].tolist(),
                )
                for i in chunk
                if i % PARTITIONS == p
            ]
            index.apply(p, [], 0, rows)
    loaded = time.perf_counter() - started
    index.flush()
    while len(server.index_files("HNSW")) < PARTITIONS:  # one sealed segment a partition
        time.sleep(0.5)
    indexed = time.perf_counter() - started
    print(f"loaded {n} vectors in {loaded:.1f} s, indexed after {indexed:.1f} s", flush=True)
    now = int(time.time() * 1000)
    everything = range(PARTITIONS)

    def run(partitions: list[int]) -> tuple[list[float], float, float, float]:
        """Latencies, queries/s, brute-force queries/s and recall@10 over ``partitions``."""
        members = np.flatnonzero(np.isin(np.arange(n) % PARTITIONS, partitions))
        subset = stored[members]
        expr = expression(Scope("bench"), partitions, [], now)
        for q in queries[:20]:  # warm up
            index.search(q.tolist(), K, expr, partitions)
        latencies, found = [], []
        started = time.perf_counter()
        for q in queries:
            t = time.perf_counter()
            hits = index.search(q.tolist(), K, expr, partitions)
            latencies.append(time.perf_counter() - t)
            found.append([int(h.key[1:]) for h in hits])
        qps = QUERIES / (time.perf_counter() - started)
        started = time.perf_counter()
        for q in queries:  # brute force, one query at a time as the index was asked
            scores = subset @ q
            np.argpartition(-scores, K)[:K]
        brute_qps = QUERIES / (time.perf_counter() - started)
        exact = members[exact_top(subset, queries, K)]
        hit = [len(set(f) & set(e)) / K for f, e in zip(found, exact.tolist(), strict=True)]
        return latencies, qps, brute_qps, float(np.mean(hit))

    latencies, qps, brute_qps, recall = run(list(everything))
    one, one_qps, one_brute_qps, one_recall = run([3])
    index.close()
    result = {
        "search_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "search_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "search_qps": round(qps),
        "brute_qps": round(brute_qps),
        "recall_at_10": round(recall, 4),
        "partition_search_p50_ms": round(statistics.median(one) * 1000, 2),
        "partition_search_p99_ms": round(percentile(one, 0.99) * 1000, 2),
        "partition_search_qps": round(one_qps),
        "partition_brute_qps": round(one_brute_qps),
        "partition_recall_at_10": round(one_recall, 4),
    }
    print(f"index: {result}", flush=True)
    return result


async def measure_lag(
    uri: str, dims: int, seconds: float, rate: float, work: Path
) -> dict[str, Any]:
    import aiohttp

    port = free_port()
    config = {"uri": uri, "dimensions": dims, "collection": "bench_lag", "writer": "true",
              "flushRows": 5000}  # as agentmem up runs Milvus Lite  # fmt: skip
    log = (work / "node.log").open("wb")
    node = subprocess.Popen(
        [sys.executable, "-m", "agentmem", "node", "--partitions", str(PARTITIONS),
         "--log", f"sqlite:{work / 'log.db'}", "--no-auth", "--listen", f"127.0.0.1:{port}",
         "--semantic", json.dumps(config)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(3)
    acked: list[tuple[int, int, float]] = []  # (partition, offset, time acknowledged)
    indexed_at: dict[tuple[int, int], float] = {}
    try:
        async with aiohttp.ClientSession() as s:
            while True:
                try:
                    async with s.get(f"{base}/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)
            # warm up: the first write waits for the node's index client to connect
            async with s.put(
                f"{base}/v1/tenants/bench/agents/warm/keys/up",
                data=json.dumps({"value": 1, "vector": [1.0] * dims}),
                headers={"Content-Type": "application/vnd.agentmem.memory+json"},
            ) as r:
                version = (await r.json())["version"]
            async with s.post(
                f"{base}/v1/tenants/bench/agents/warm/search",
                json={"vector": [1.0] * dims, "k": 1, "min_version": version},
            ) as r:
                assert r.status == 200, await r.text()
            stop = time.monotonic() + seconds

            async def writer(w: int) -> None:
                i = 0
                start = time.monotonic()
                while time.monotonic() < stop:
                    if rate:  # paced: each of the 16 connections sends rate/16 a second
                        ahead = start + i * 16 / rate - time.monotonic()
                        if ahead > 0:
                            await asyncio.sleep(ahead)
                    vector = rng.standard_normal(dims).astype(np.float32).tolist()
                    body = {"value": {"w": w, "i": i}, "text": f"memory {i}", "vector": vector}
                    async with s.put(
                        f"{base}/v1/tenants/bench/agents/agent-{w}-{i % 8}/keys/m{i}",
                        data=json.dumps(body),
                        headers={"Content-Type": "application/vnd.agentmem.memory+json"},
                    ) as r:
                        version = (await r.json())["version"]
                    p, offset = version.split(":")
                    acked.append((int(p), int(offset), time.monotonic()))
                    i += 1

            async def poller() -> None:
                seen: dict[int, int] = {}
                while time.monotonic() < stop + 10:
                    async with s.get(f"{base}/v1/status") as r:
                        status = await r.json()
                    now = time.monotonic()
                    for p, offset in status["semantic"]["indexed"].items():
                        seen[int(p)] = int(offset)
                    for p, offset, _ in acked:
                        if (p, offset) not in indexed_at and seen.get(p, -1) >= offset:
                            indexed_at[(p, offset)] = now
                    if time.monotonic() > stop and len(indexed_at) == len(acked):
                        return
                    await asyncio.sleep(0.01)

            await asyncio.gather(poller(), *(writer(w) for w in range(16)))
    finally:
        node.terminate()
        node.wait(30)
        log.close()
    lags = [max(0.0, indexed_at[(p, o)] - t) for p, o, t in acked if (p, o) in indexed_at]
    result = {
        "writes": len(acked),
        "write_rps": round(len(acked) / seconds),
        "index_lag_p50_s": round(statistics.median(lags), 3),
        "index_lag_p99_s": round(percentile(lags, 0.99), 3),
        "never_indexed": len(acked) - len(lags),
    }
    print(f"lag: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="writes per second (0: as fast as taken)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agentmem-search-") as tmp:
        work = Path(tmp)
        server = MilvusLite(work / "milvus").start()
        try:
            index = measure_index(server.uri, server, args.vectors, args.dimensions)
            lag = asyncio.run(
                measure_lag(server.uri, args.dimensions, args.seconds, args.rate, work)
            )
        finally:
            server.stop()
    print(json.dumps({"vectors": args.vectors, "dimensions": args.dimensions, **index, **lag}))


if __name__ == "__main__":
    main()
