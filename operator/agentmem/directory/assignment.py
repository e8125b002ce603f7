"""Assign partitions to shards: balanced, minimal movement, deterministic, zone-aware.

This is the consistent-hash ring of a cluster. Keys hash onto a fixed ring of P
partitions (:mod:`agentmem.directory.hashing`); this module decides which shard
owns each partition, and how that changes when shards come and go:

- balanced: shard loads differ by at most one partition;
- minimal movement: from a previous table, only partitions that must move do.
  With ``base = P // S`` and ``extra = P % S`` shards carrying ``base + 1``, a
  table moves ``orphans + sum(max(0, load - base)) - min(extra, heavy)``
  partitions, where ``heavy`` counts shards already above ``base``. That is
  the least any balanced table can move, and this one moves exactly that;
- deterministic: the same inputs give the same table, whatever the platform;
- zone-aware: where the choice of which shards carry ``base + 1`` is free, the
  extra partitions go to the zones holding the fewest, so zones stay balanced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

Table = tuple[int, ...]


@dataclass(frozen=True, order=True)
class ShardSlot:
    """A shard as the assignment sees it: its id and its home zone ("" for none)."""

    id: int
    zone: str = ""


def _targets(loads: dict[int, int], shards: Sequence[ShardSlot], partitions: int) -> dict[int, int]:
    """Each shard's load after the rebalance, chosen to minimize movement."""
    base, extra = divmod(partitions, len(shards))
    zone_load: Counter[str] = Counter()
    for shard in shards:
        zone_load[shard.zone] += base
    heavy = [s for s in shards if loads[s.id] > base]
    light = [s for s in shards if loads[s.id] <= base]
    plus_one: set[int] = set()
    # Heavy shards first: giving them base + 1 saves a move each. Within a group,
    # the zone with the fewest partitions wins, then the more loaded shard, then
    # the lower id.
    for group in (heavy, light):
        candidates = list(group)
        while candidates and len(plus_one) < extra:
            best = min(candidates, key=lambda s: (zone_load[s.zone], -loads[s.id], s.id))
            candidates.remove(best)
            plus_one.add(best.id)
            zone_load[best.zone] += 1
    return {s.id: base + (1 if s.id in plus_one else 0) for s in shards}


def assign(
    partitions: int, shards: Sequence[ShardSlot], previous: Sequence[int] | None = None
) -> Table:
    """The table ``partition -> shard id`` for ``shards``, starting from ``previous``.

    ``previous`` may name shards that no longer exist (their partitions move) or
    be ``None`` for a first assignment.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    if not shards:
        raise ValueError("at least one shard is needed")
    if len(shards) > partitions:
        raise ValueError(f"{len(shards)} shards cannot share {partitions} partitions")
    ids = [s.id for s in shards]
    if len(set(ids)) != len(ids):
        raise ValueError(f"shard ids must be unique: {ids}")
    if previous is not None and len(previous) != partitions:
        raise ValueError(f"previous table has {len(previous)} entries, expected {partitions}")

    ordered = sorted(shards)
    live = set(ids)
    table: list[int | None] = (
        [None] * partitions if previous is None else [p if p in live else None for p in previous]
    )
    owned: dict[int, list[int]] = {s: [] for s in ids}
    for partition, owner in enumerate(table):
        if owner is not None:
            owned[owner].append(partition)
    targets = _targets({s: len(p) for s, p in owned.items()}, ordered, partitions)

    # Donors give up their highest-numbered partitions; orphans join the pool.
    pool = [p for p, owner in enumerate(table) if owner is None]
    for shard in ordered:
        surplus = len(owned[shard.id]) - targets[shard.id]
        if surplus > 0:
            pool.extend(owned[shard.id][-surplus:])
    pool.sort()
    # Receivers take from the pool in shard order.
    cursor = 0
    for shard in ordered:
        need = targets[shard.id] - len(owned[shard.id])
        for partition in pool[cursor : cursor + max(need, 0)]:
            table[partition] = shard.id
        cursor += max(need, 0)
    result = tuple(owner for owner in table if owner is not None)
    if cursor != len(pool) or len(result) != partitions:  # pragma: no cover
        raise AssertionError("assignment left partitions without an owner")
    return result


def loads(table: Sequence[int]) -> Counter[int]:
    """Partitions per shard."""
    return Counter(table)


def moved(old: Sequence[int], new: Sequence[int]) -> list[int]:
    """Partitions whose owner differs between two tables."""
    return [p for p, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
