"""Properties of the partition assignment (the consistent-hash ring)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentmem.directory import ShardSlot, assign, loads, moved

ZONES = ["zone-a", "zone-b", "zone-c"]


def slots(n: int, zones: list[str] | None = None) -> list[ShardSlot]:
    zs = zones if zones is not None else [""]
    return [ShardSlot(i, zs[i % len(zs)]) for i in range(n)]


def minimum_moves(previous: tuple[int, ...], shards: list[ShardSlot]) -> int:
    """The fewest moves any balanced table needs, computed independently."""
    partitions, count = len(previous), len(shards)
    base, extra = divmod(partitions, count)
    live = {s.id for s in shards}
    load = Counter(p for p in previous if p in live)
    orphans = sum(1 for p in previous if p not in live)
    surplus = sum(max(0, load[s.id] - base) for s in shards)
    heavy = sum(1 for s in shards if load[s.id] > base)
    return orphans + surplus - min(extra, heavy)


resize = st.tuples(
    st.integers(min_value=1, max_value=512),  # partitions
    st.integers(min_value=1, max_value=40),  # shards before
    st.integers(min_value=1, max_value=40),  # shards after
    st.sampled_from([[""], ZONES, ["a", "b"]]),
)


@given(resize)
@settings(max_examples=300, deadline=None)
def test_resize_is_balanced_complete_and_minimal(case: tuple[int, int, int, list[str]]) -> None:
    partitions, before, after, zones = case
    before, after = min(before, partitions), min(after, partitions)
    old = assign(partitions, slots(before, zones))
    new = assign(partitions, slots(after, zones), old)
    # every partition has exactly one owner, and it is a live shard
    assert len(new) == partitions
    assert set(new) <= set(range(after))
    # balanced: loads differ by at most one
    counts = loads(new)
    assert set(counts) == set(range(after))
    assert max(counts.values()) - min(counts.values()) <= 1
    # minimal movement
    assert len(moved(old, new)) == minimum_moves(old, slots(after, zones))
    # deterministic
    assert new == assign(partitions, slots(after, zones), old)


@given(
    st.integers(min_value=1, max_value=256),
    st.lists(st.integers(min_value=1, max_value=24), min_size=1, max_size=6),
)
@settings(max_examples=150, deadline=None)
def test_chains_of_resizes_stay_minimal(partitions: int, sizes: list[int]) -> None:
    table = assign(partitions, slots(min(sizes[0], partitions), ZONES))
    for size in sizes[1:]:
        shards = slots(min(size, partitions), ZONES)
        new = assign(partitions, shards, table)
        assert len(moved(table, new)) == minimum_moves(table, shards)
        table = new


def test_no_change_moves_nothing() -> None:
    table = assign(64, slots(5, ZONES))
    assert assign(64, slots(5, ZONES), table) == table


def test_scale_out_by_one_moves_the_ideal_share() -> None:
    old = assign(72, slots(8))
    new = assign(72, slots(9), old)
    assert len(moved(old, new)) == 8  # 72/9: only the new shard's share moves
    assert all(new[p] == 8 for p in moved(old, new))


def test_zone_aware_extra_partitions_spread_over_zones() -> None:
    # 64 partitions over 6 shards in 3 zones: 4 shards carry 11, 2 carry 10.
    table = assign(64, slots(6, ZONES))
    zone_of = {s.id: s.zone for s in slots(6, ZONES)}
    per_zone = Counter(zone_of[s] for s in table)
    assert max(per_zone.values()) - min(per_zone.values()) <= 1
    # without zones the same input puts the extras on the lowest ids
    plain = loads(assign(64, slots(6)))
    assert [plain[i] for i in range(6)] == [11, 11, 11, 11, 10, 10]


def test_removed_shards_partitions_are_reassigned() -> None:
    old = assign(10, slots(5))
    new = assign(10, [ShardSlot(0), ShardSlot(2), ShardSlot(4)], old)
    assert set(new) == {0, 2, 4}
    for p, owner in enumerate(old):
        if owner in (0, 2, 4) and Counter(new)[owner] >= Counter(old)[owner]:
            assert new[p] == owner


@pytest.mark.parametrize(
    ("partitions", "shards", "message"),
    [
        (0, slots(1), "partitions must be at least 1"),
        (4, [], "at least one shard"),
        (2, slots(3), "3 shards cannot share 2 partitions"),
        (4, [ShardSlot(1), ShardSlot(1)], "unique"),
    ],
)
def test_bad_input(partitions: int, shards: list[ShardSlot], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        assign(partitions, shards)


def test_previous_table_must_match() -> None:
    with pytest.raises(ValueError, match="previous table has 3 entries, expected 4"):
        assign(4, slots(2), (0, 1, 0))
