"""A tenant-wide search over every shard: the fan-out and the merge, shared by
the router and the SDK.

Each shard is asked for the best ``k`` among the partitions it owns (the body
names them, so a node that still serves a partition it is handing off does not
answer for it twice). The answers are merged by score (the metric says whether
higher or lower is closer) into the best ``k``. Partitions whose shard did not
answer are listed as ``missing``: the answer is then partial, and the caller
decides whether that will do.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from agentmem.directory import Directory


def shard_requests(body: Mapping[str, Any], directory: Directory) -> dict[int, dict[str, Any]]:
    """The body to send each assigned shard (only shards with asked-for partitions)."""
    asked = body.get("partitions")
    wanted = set(range(directory.partitions)) if asked is None else set(asked)
    out = {}
    for shard in sorted(directory.assigned_shards()):
        mine = sorted(p for p in directory.partitions_of(shard) if p in wanted)
        if mine:
            out[shard] = {**body, "partitions": mine}
    return out


def merge(answers: Iterable[Mapping[str, Any]], k: int, metric: str) -> list[dict[str, Any]]:
    """The best ``k`` items of all answers, best first (one per key)."""
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for answer in answers:
        for item in answer.get("items", []):
            name = (item["agent"], item["key"])
            if name not in items or int(item["version"].split(":")[1]) > int(
                items[name]["version"].split(":")[1]
            ):
                items[name] = item
    closer_first = metric != "L2"
    ranked = sorted(items.values(), key=lambda item: item["score"], reverse=closer_first)
    return ranked[:k]


def missing_partitions(
    requests: Mapping[int, Mapping[str, Any]], answered: Sequence[int]
) -> list[int]:
    """The partitions asked of shards that did not answer."""
    done = set(answered)
    return sorted(
        p for shard, body in requests.items() if shard not in done for p in body["partitions"]
    )
