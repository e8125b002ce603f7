"""Key lookup speed, balance and movement of agentmem's directory, against the
`hashring` and `uhashring` consistent-hashing libraries on the same keys.

    python benchmarks/ring.py [--keys 1000000] [--partitions 64]

Prints a table per measurement, then one JSON line with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

from hashring import HashRing as HashRingLib
from uhashring import HashRing as UHashRing

from agentmem.directory import Directory, ShardEntry, ShardSlot, assign

TENANT = "bench"


def agent_ids(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"agent-{rng.getrandbits(64):016x}" for _ in range(n)]


def directory(partitions: int, shards: int, previous: Sequence[int] | None = None) -> Directory:
    slots = [ShardSlot(i, f"zone-{'abc'[i % 3]}") for i in range(shards)]
    entries = tuple(
        ShardEntry(i, f"shard-{i}", f"shard-{i}:7070", s.zone) for i, s in enumerate(slots)
    )
    return Directory("bench", "bench", "t", 1, assign(partitions, slots, previous), entries)


def timed(lookup: Callable[[str], object], ids: list[str]) -> tuple[list[object], float]:
    """Owners of every id and the mean microseconds per lookup."""
    start = time.perf_counter()
    owners = [lookup(agent) for agent in ids]
    return owners, (time.perf_counter() - start) / len(ids) * 1e6


def max_over_mean(owners: list[object]) -> float:
    counts = Counter(owners)
    return max(counts.values()) / (len(owners) / len(counts))


def moved(a: list[object], b: list[object]) -> float:
    return sum(1 for x, y in zip(a, b, strict=True) if x != y) / len(a)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=64, help="agentmem's spec.partitions")
    args = parser.parse_args(argv)
    ids = agent_ids(args.keys)
    keys = [f"{TENANT}/{a}" for a in ids]
    p = args.partitions
    print(f"{args.keys:,} random agent ids; agentmem with {p} partitions", file=sys.stderr)

    results: dict[str, dict[str, float]] = {}
    owners: dict[tuple[str, int], list[object]] = {}
    for name in ("agentmem", "hashring", "uhashring"):
        for shards in (8, 9):
            nodes = [f"shard-{i}" for i in range(shards)]
            if name == "agentmem":
                d8 = directory(p, 8)
                d = d8 if shards == 8 else directory(p, 9, d8.table)
                # the 9 -> 8 table starts from the 9-shard table
                lookup: Callable[[str], object] = lambda a, d=d: d.lookup(TENANT, a).id  # noqa: E731
                owner_list, us = timed(lookup, ids)
            elif name == "hashring":
                ring = HashRingLib(nodes)
                owner_list, us = timed(ring.get_node, keys)
            else:
                uring = UHashRing(nodes=nodes)
                owner_list, us = timed(uring.get_node, keys)
            owners[(name, shards)] = owner_list
            results.setdefault(name, {})[f"lookup_us_{shards}"] = us
            results[name][f"max_over_mean_{shards}"] = max_over_mean(owner_list)
            print(f"  {name:10s} {shards} shards: {us:6.3f} us/lookup", file=sys.stderr)
        results[name]["moved_8_to_9"] = moved(owners[(name, 8)], owners[(name, 9)])

    # agentmem 9 -> 8 starts from the 9-shard table and removes shard 8.
    d9 = directory(p, 9, directory(p, 8).table)
    d98 = directory(p, 8, d9.table)
    after = [d98.lookup(TENANT, a).id for a in ids]
    results["agentmem"]["moved_9_to_8"] = moved(owners[("agentmem", 9)], after)
    for name in ("hashring", "uhashring"):
        results[name]["moved_9_to_8"] = moved(owners[(name, 9)], owners[(name, 8)])

    granularity = -(-p // 9) / (p / 9)  # best max/mean 9 shards can have over p partitions
    # The fewest partitions a balanced 9-shard table can take from 8 shards: the
    # new shard's share, floor(p / 9). Keys follow partitions.
    partition_ideal = (p // 9) / p
    print("\nlibrary     lookup us  max/mean(9)  moved 8->9  moved 9->8", file=sys.stderr)
    for name, r in results.items():
        print(
            f"{name:10s} {r['lookup_us_9']:9.3f}  {r['max_over_mean_9']:11.3f}"
            f"  {r['moved_8_to_9']:10.4f}  {r['moved_9_to_8']:10.4f}",
            file=sys.stderr,
        )
    print(
        f"ideal moved fraction 1/9 = {1 / 9:.4f}; best max/mean with {p} partitions on 9 "
        f"shards = {granularity:.3f}; fewest partitions moved 8->9 = {partition_ideal:.4f} of keys",
        file=sys.stderr,
    )
    am, hr, ur = results["agentmem"], results["hashring"], results["uhashring"]
    summary = {
        "keys": args.keys,
        "partitions": p,
        "lookup_us": round(am["lookup_us_9"], 3),
        "hashring_lookup_us": round(hr["lookup_us_9"], 3),
        "uhashring_lookup_us": round(ur["lookup_us_9"], 3),
        "speedup_vs_hashring": round(hr["lookup_us_9"] / am["lookup_us_9"], 1),
        "speedup_vs_uhashring": round(ur["lookup_us_9"] / am["lookup_us_9"], 1),
        "max_over_mean": round(am["max_over_mean_9"], 4),
        "granularity_max_over_mean": round(granularity, 4),
        "hashring_max_over_mean": round(hr["max_over_mean_9"], 4),
        "uhashring_max_over_mean": round(ur["max_over_mean_9"], 4),
        "moved_fraction": round(am["moved_8_to_9"], 4),
        "moved_fraction_9_to_8": round(am["moved_9_to_8"], 4),
        "ideal_moved_fraction": round(1 / 9, 4),
        "partition_ideal_moved_fraction": round(partition_ideal, 4),
        "hashring_moved_fraction": round(hr["moved_8_to_9"], 4),
        "uhashring_moved_fraction": round(ur["moved_8_to_9"], 4),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
