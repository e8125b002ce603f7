"""The directory document and the plan between two tables."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmem.directory import (
    Directory,
    DirectoryError,
    Move,
    ShardEntry,
    ShardSlot,
    assign,
    moves_between,
    partition_for,
    steps,
)


def entries(n: int) -> tuple[ShardEntry, ...]:
    return tuple(ShardEntry(i, f"demo-shard-{i}", f"demo-shard-{i}.ns.svc:7070") for i in range(n))


def directory(shards: int = 3, partitions: int = 16) -> Directory:
    table = assign(partitions, [ShardSlot(i) for i in range(shards)])
    return Directory("demo", "ns", "topic", 1, table, entries(shards))


def test_json_round_trip_is_stable() -> None:
    d = directory().with_pending(2, [Move(0, 0, 1)])
    text = d.to_json()
    assert Directory.from_json(text) == d
    assert Directory.from_json(text).to_json() == text
    data = json.loads(text)
    assert data["schemaVersion"] == 1
    assert data["hash"] == "xxh3_64(tenant/agent_id) mod partitions"
    assert data["pending"] == {"epoch": 2, "moves": [{"partition": 0, "source": 0, "target": 1}]}


def test_lookup_follows_the_hash_and_the_table() -> None:
    d = directory(partitions=64)
    p = partition_for("acme", "agent-1", 64)
    assert d.lookup("acme", "agent-1") == d.owner(p) == entries(3)[d.table[p]]


def test_commit_applies_moves_and_checks_owners() -> None:
    d = directory()
    p = d.partitions_of(0)[0]
    committed = d.commit(2, [Move(p, 0, 2)], entries(3))
    assert committed.epoch == 2
    assert committed.table[p] == 2
    assert committed.pending is None
    with pytest.raises(DirectoryError, match=f"partition {p} is owned by shard 2, not by shard 0"):
        committed.commit(3, [Move(p, 0, 1)], entries(3))
    with pytest.raises(DirectoryError, match="not after the current epoch"):
        committed.commit(2, [], entries(3))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schemaVersion=2), "schemaVersion 2 is not supported"),
        (lambda d: d.update(hash="md5"), "is not 'xxh3_64"),
        (lambda d: d.update(partitions=3), "table has 16 entries but partitions is 3"),
        (lambda d: d.pop("epoch"), "missing or mistypes 'epoch'"),
        (lambda d: d.update(shards=[]), "table names shards without an entry"),
    ],
)
def test_bad_documents_are_rejected_clearly(mutate: object, message: str) -> None:
    data = json.loads(directory().to_json())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(DirectoryError, match=message):
        Directory.from_dict(data)


def test_not_json() -> None:
    with pytest.raises(DirectoryError, match="not valid JSON"):
        Directory.from_json("{")


@given(
    st.integers(min_value=1, max_value=300),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=20),
    st.integers(min_value=1, max_value=50),
)
@settings(max_examples=200, deadline=None)
def test_steps_cover_every_move_once(partitions: int, a: int, b: int, per_step: int) -> None:
    a, b = min(a, partitions), min(b, partitions)
    old = assign(partitions, [ShardSlot(i) for i in range(a)])
    new = assign(partitions, [ShardSlot(i) for i in range(b)], old)
    moves = moves_between(old, new)
    cut = steps(moves, per_step)
    flat = [m for step in cut for m in step]
    assert sorted(flat, key=lambda m: m.partition) == moves
    assert all(0 < len(step) <= per_step for step in cut)
    assert len(cut) == -(-len(moves) // per_step)
    # applying the steps one by one reaches the new table
    d = Directory("c", "ns", "t", 1, old, entries(max(a, b)))
    for i, step in enumerate(cut):
        d = d.commit(2 + i, step, entries(max(a, b)))
    assert d.table == new


def test_steps_interleave_targets() -> None:
    old = assign(64, [ShardSlot(i) for i in range(3)])
    new = assign(64, [ShardSlot(i) for i in range(5)], old)
    first = steps(moves_between(old, new), 8)[0]
    assert Counter(m.target for m in first) == {3: 4, 4: 4}
