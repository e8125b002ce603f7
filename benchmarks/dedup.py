"""What a remembered request id costs: Redis memory per write with and without an
``X-Request-Id`` (the same writes, side by side), and the durable store's bytes per
request-id row in PostgreSQL.

    python benchmarks/dedup.py [--writes 100000]

Only ids a client sends are remembered (for the dedup window, bounded per
partition by spec.dedup.maxRequestIdsPerPartition); this gives the memory that
bound stands for. Prints a line per measurement, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis
from tests.kafka.conftest import RedisServer
from tests.net import free_port
from tests.postgres import PostgresServer

from agentmem.eventlog.events import Event
from agentmem.eventlog.ports import LogRecord
from agentmem.node.state.redis import RedisState
from agentmem.node.writebehind import changes_of
from agentmem.store.postgres import PostgresStore

T0 = 1_800_000_000_000
WINDOW_MS = 600_000
DEFAULT_LIMIT = 50_000  # spec.dedup.maxRequestIdsPerPartition


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def events(n: int, with_ids: bool) -> list[LogRecord]:
    out = []
    for i in range(n):
        rid = f"client-{i:08d}-retry-safe" if with_ids else ""
        event = Event(
            "put", "bench", f"agent-{i % 1000}", f"k{i % 10}", f'{{"n":{i}}}', None, None, rid,
            "bench", 0,
        )  # fmt: skip
        out.append(LogRecord(0, i, T0 + i, event.encode(), event.path.encode()))
    return out


def redis_bytes(server: RedisServer, records: list[LogRecord]) -> int:
    with redis.Redis(port=server.port) as client:
        client.flushall()
        state = RedisState(server.url, WINDOW_MS)
        state.claim()
        before = int(client.info("memory")["used_memory"])
        for i in range(0, len(records), 2000):
            state.apply(0, records[i : i + 2000])
        after = int(client.info("memory")["used_memory"])
        state.close_sync()
    return after - before


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # so that the servers started are stopped


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--writes", type=int, default=100_000)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="agentmem-bench-"))
    server = RedisServer(free_port(), workdir).start()
    pg = PostgresServer().init()
    try:
        n = args.writes
        plain = redis_bytes(server, events(n, with_ids=False))
        with_ids = redis_bytes(server, events(n, with_ids=True))
        per_id = (with_ids - plain) / n
        say(f"Redis: {plain / n:.1f} B per write without ids, {with_ids / n:.1f} B with ids")
        store = PostgresStore(pg.url, "bench_dedup")
        store.open("bench", "topic")
        records = events(n, with_ids=True)
        for i in range(0, n, 5000):
            batch = records[i : i + 5000]
            store.write(0, batch[0].offset, batch[-1].offset, changes_of(0, batch, WINDOW_MS))
        store.close()
        size = int(str(pg.sql("SELECT pg_total_relation_size('bench_dedup.request_ids')")[0][0]))
        rows = int(str(pg.sql("SELECT count(*) FROM bench_dedup.request_ids")[0][0]))
        say(f"PostgreSQL: {size / rows:.1f} B per request-id row (table and indexes)")
        print(
            json.dumps(
                {
                    "writes": n,
                    "redis_bytes_per_write_without_id": round(plain / n, 1),
                    "redis_bytes_per_write_with_id": round(with_ids / n, 1),
                    "redis_bytes_per_request_id": round(per_id, 1),
                    "redis_mib_per_partition_at_default_limit": round(
                        per_id * DEFAULT_LIMIT / 2**20, 1
                    ),
                    "store_bytes_per_request_id": round(size / rows, 1),
                    "store_request_id_rows": rows,
                }
            )
        )
        return 0
    finally:
        server.stop()
        pg.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
