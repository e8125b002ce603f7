"""The durable store's write protocol on real PostgreSQL (and the embedded SQLite):
conditional offset rows, stale and gap ranges, concurrent writers, identity."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentmem.eventlog.events import Event
from agentmem.eventlog.ports import LogRecord
from agentmem.node.apply import MemoryState
from agentmem.node.writebehind import changes_of
from agentmem.store.ports import DurableStore, Snapshot, StoreIdentityError
from agentmem.store.postgres import PostgresStore
from agentmem.store.sqlite import SqliteStore
from tests.postgres import PostgresServer

T0 = 1_800_000_000_000
WINDOW = 60_000


def random_log(seed: int, n: int, partition: int = 3) -> list[LogRecord]:
    """Events over a few keys with every kind of condition, TTLs and repeated ids."""
    rng = random.Random(seed)
    out, ts, versions = [], T0, {}
    for offset in range(n):
        ts += rng.randrange(0, 2000)
        key = rng.choice(["k1", "k2", "dir/k3", "k4"])
        op = rng.choice(["put", "put", "merge", "delete"])
        expect: Any = rng.choice([None, None, "absent", versions.get(key, 0), rng.randrange(n)])
        ttl = rng.choice([None, None, None, rng.randrange(1, 5000)])
        rid = rng.choice(["", "", f"r{rng.randrange(20)}"])
        event = Event(
            op, "t", rng.choice(["a", "b"]), key, None if op == "delete" else str(offset),  # type: ignore[arg-type]
            expect, None if ttl is None else ts + ttl, rid, "test", 0,
        )  # fmt: skip
        versions[key] = offset
        out.append(LogRecord(partition, offset, ts, event.encode(), event.path.encode()))
    if rng.random() < 0.5:  # a tick at the end, moving log time on
        tick = Event.tick(0).encode()
        out.append(LogRecord(partition, n, ts + 10_000, tick))
    return out


def reference(log: list[LogRecord]) -> dict[str, Any]:
    state = MemoryState(WINDOW)
    state.apply_batch(log[0].partition, [(r.offset, r.timestamp, r.payload) for r in log])
    return state.snapshot()


def facts(snapshot: Snapshot) -> dict[str, Any]:
    """A store snapshot in the shape of MemoryState.snapshot()."""
    state = MemoryState(WINDOW)
    state.load(snapshot)
    return state.snapshot()


@pytest.fixture(params=["postgres", "sqlite"])
def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path, schema: str
) -> Iterator[Callable[[], DurableStore]]:
    made: list[DurableStore] = []

    def make() -> DurableStore:
        if request.param == "postgres":
            server: PostgresServer = request.getfixturevalue("postgres")
            store: DurableStore = PostgresStore(server.url, schema, pool_size=8)
        else:
            store = SqliteStore(tmp_path / "store.db")
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_migrations_are_idempotent_and_the_identity_is_checked(
    store_factory: Callable[[], DurableStore],
) -> None:
    store = store_factory()
    store.open("uid-1", "topic-1")
    log = random_log(1, 5)
    assert store.write(3, 0, log[-1].offset, changes_of(3, log, WINDOW)).status == "written"
    again = store_factory()
    again.open("uid-1", "topic-1")  # migrations run again, harmlessly
    assert again.offsets([3])[3].offset == log[-1].offset
    with pytest.raises(StoreIdentityError, match="another event topic"):
        store_factory().open("uid-1", "topic-2")
    with pytest.raises(StoreIdentityError, match="another cluster"):
        store_factory().open("uid-2", "topic-1")


def test_a_range_is_written_once_continuing_the_stored_offset(
    store_factory: Callable[[], DurableStore],
) -> None:
    store = store_factory()
    store.open("uid", "topic")
    log = random_log(2, 40)
    first, second, third = log[:10], log[10:25], log[25:]
    assert store.write(3, 10, 24, changes_of(3, second, WINDOW)).status == "gap"
    result = store.write(3, 0, 9, changes_of(3, first, WINDOW))
    assert (result.status, result.stored.offset) == ("written", 9)
    assert store.write(3, 0, 9, changes_of(3, first, WINDOW)).status == "stale"
    # A range that overlaps the stored offset is written from where it stops.
    overlapping = log[5:25]
    assert store.write(3, 5, 24, changes_of(3, overlapping, WINDOW)).stored.offset == 24
    assert store.write(3, 25, third[-1].offset, changes_of(3, third, WINDOW)).status == "written"
    snapshot = store.snapshot(3)
    assert snapshot.stored.offset == log[-1].offset
    assert snapshot.stored.log_time == log[-1].timestamp
    assert facts(snapshot) == reference(log)
    assert store.offsets([3, 4]) == {3: snapshot.stored, 4: store.offsets([4])[4]}
    assert store.offsets([4])[4].offset == -1


@pytest.mark.parametrize("seed", range(3))
def test_concurrent_replicas_agree_with_the_reference(
    store_factory: Callable[[], DurableStore], seed: int
) -> None:
    """Several writers (replicas) race over overlapping batches of the same log: the
    store ends identical to the apply function's output, no range skipped."""
    log = random_log(seed, 400)
    store = store_factory()
    store.open("uid", "topic")
    outcomes: list[str] = []
    failures: list[BaseException] = []

    def replica(batch_size: int) -> None:
        mine = store_factory()
        mine.open("uid", "topic")
        try:
            i = 0
            while i < len(log):
                batch = log[i : i + batch_size]
                result = mine.write(
                    3, batch[0].offset, batch[-1].offset, changes_of(3, batch, WINDOW)
                )
                outcomes.append(result.status)
                assert result.status != "gap" or result.stored.offset < batch[0].offset - 1
                if result.status == "gap":
                    continue  # a faster replica has not got there yet; try again
                i += batch_size
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=replica, args=(size,)) for size in (7, 13, 29, 50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert "written" in outcomes and "stale" in outcomes
    assert facts(store.snapshot(3)) == reference(log)


def test_serialization_failures_are_retried(postgres: PostgresServer, schema: str) -> None:
    """A write whose offset row was changed by a transaction that committed after the
    write's snapshot fails to serialize (SQLSTATE 40001); it is retried and lands once."""
    import time

    import psycopg

    store = PostgresStore(postgres.url, schema)
    store.open("uid", "topic")
    log = random_log(7, 20)
    store.write(3, 0, 9, changes_of(3, log[:10], WINDOW))
    with psycopg.connect(postgres.url) as holder:
        holder.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
        holder.execute(
            f'SELECT log_offset FROM "{schema}".log_offsets WHERE partition = 3 FOR UPDATE'.encode()
        )
        result: list[Any] = []
        racer = threading.Thread(
            target=lambda: result.append(store.write(3, 10, 14, changes_of(3, log[10:15], WINDOW)))
        )
        racer.start()
        time.sleep(0.5)  # the write took its snapshot and waits for the row lock
        table = f'"{schema}".log_offsets'
        holder.execute(f"UPDATE {table} SET log_time = log_time + 1 WHERE partition = 3".encode())
        holder.commit()
    racer.join(20)
    assert store.retries >= 1
    assert result[0].status == "written"
    assert store.offsets([3])[3].offset == 14
    store.close()


def test_stored_bytes_are_counted_per_tenant_in_bytes(
    store_factory: Callable[[], DurableStore],
) -> None:
    store = store_factory()
    store.open("uid", "topic")
    values = {("acme", "k1"): '"héllo"', ("acme", "k2"): "[1,2,3]", ("globex", "k"): '"x"'}
    log = [
        LogRecord(
            p, 0, T0,
            Event("put", tenant, "bot", key, value, None, None, "", "test", 0).encode(),  # type: ignore[arg-type]
            f"{tenant}/bot/{key}".encode(),
        )
        for p, ((tenant, key), value) in enumerate(values.items())
    ]  # fmt: skip
    for record in log:
        store.write(record.partition, 0, 0, changes_of(record.partition, [record], WINDOW))
    # Across partitions, by tenant; bytes of the UTF-8 text ("é" is two).
    assert store.tenant_bytes() == {"acme": 8 + 7, "globex": 3}
