"""The directory document: which shard owns each partition, at which epoch.

The operator writes it into the ``<cluster>-directory`` ConfigMap as JSON; the
SDK, routers and memory nodes read it. Every committed change of the table
increases ``epoch``. While a rebalance step warms up, ``pending`` lists the
moves the next epoch will commit, so gaining shards know what to replay.

Schema (``schemaVersion`` 1)::

    {
      "schemaVersion": 1,
      "cluster": "demo", "namespace": "default", "topic": "agentmem.default.demo.events",
      "hash": "xxh3_64(tenant/agent_id) mod partitions",
      "partitions": 64,
      "epoch": 3,
      "table": [0, 0, 1, ...],                 # partition -> shard id
      "shards": [{"id": 0, "name": "demo-shard-0", "zone": "zone-a",
                  "endpoint": "demo-shard-0.default.svc:7070",
                  "replicas": [{"endpoint": "...", "zone": "zone-a"}]},  # optional
                 ...],
      "pending": {"epoch": 4, "moves": [{"partition": 7, "source": 0, "target": 3}]}
    }
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

from agentmem.directory.hashing import HASH_NAME, partition_for

SCHEMA_VERSION: Final = 1


class DirectoryError(ValueError):
    """A directory document that cannot be used; the message says what is wrong."""


@dataclass(frozen=True)
class Move:
    """One partition changing owner."""

    partition: int
    source: int
    target: int


@dataclass(frozen=True)
class Replica:
    """One replica of a shard, for clients that prefer a replica in their zone."""

    endpoint: str
    zone: str = ""


@dataclass(frozen=True)
class ShardEntry:
    """Where a shard is served (``endpoint`` reaches any of its replicas)."""

    id: int
    name: str
    endpoint: str
    zone: str = ""
    #: Optional: each replica's own endpoint and zone.
    replicas: tuple[Replica, ...] = ()


@dataclass(frozen=True)
class Pending:
    """Moves that the next epoch will commit; their targets are warming up."""

    epoch: int
    moves: tuple[Move, ...]


@dataclass(frozen=True)
class Directory:
    """A versioned partition table with the shards' endpoints."""

    cluster: str
    namespace: str
    topic: str
    epoch: int
    table: tuple[int, ...]
    shards: tuple[ShardEntry, ...]
    pending: Pending | None = None
    _owners: tuple[ShardEntry, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {s.id: s for s in self.shards}
        missing = sorted({s for s in self.table if s not in by_id})
        if missing:
            raise DirectoryError(f"table names shards without an entry: {missing}")
        if self.epoch < 1:
            raise DirectoryError(f"epoch must be at least 1, got {self.epoch}")
        object.__setattr__(self, "_owners", tuple(by_id[s] for s in self.table))

    @property
    def partitions(self) -> int:
        return len(self.table)

    def owner(self, partition: int) -> ShardEntry:
        """The shard that owns a partition at this epoch."""
        return self._owners[partition]

    def lookup(self, tenant: str, agent_id: str) -> ShardEntry:
        """The shard that serves an agent's keys."""
        return self._owners[partition_for(tenant, agent_id, len(self._owners))]

    def partitions_of(self, shard: int) -> list[int]:
        return [p for p, owner in enumerate(self.table) if owner == shard]

    def assigned_shards(self) -> set[int]:
        return set(self.table)

    def with_pending(self, epoch: int, moves: Iterable[Move]) -> Directory:
        return replace(self, pending=Pending(epoch=epoch, moves=tuple(moves)))

    def with_shards(self, shards: Sequence[ShardEntry]) -> Directory:
        return replace(self, shards=tuple(shards))

    def commit(self, epoch: int, moves: Iterable[Move], shards: Sequence[ShardEntry]) -> Directory:
        """Apply moves as ``epoch``; the pending block is cleared."""
        if epoch <= self.epoch:
            raise DirectoryError(f"epoch {epoch} is not after the current epoch {self.epoch}")
        table = list(self.table)
        for move in moves:
            if table[move.partition] != move.source:
                raise DirectoryError(
                    f"partition {move.partition} is owned by shard {table[move.partition]}, "
                    f"not by shard {move.source}"
                )
            table[move.partition] = move.target
        return replace(self, epoch=epoch, table=tuple(table), shards=tuple(shards), pending=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemaVersion": SCHEMA_VERSION,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "topic": self.topic,
            "hash": HASH_NAME,
            "partitions": self.partitions,
            "epoch": self.epoch,
            "table": list(self.table),
            "shards": [_shard_dict(s) for s in self.shards],
            "pending": None
            if self.pending is None
            else {
                "epoch": self.pending.epoch,
                "moves": [
                    {"partition": m.partition, "source": m.source, "target": m.target}
                    for m in self.pending.moves
                ],
            },
        }

    def to_json(self) -> str:
        """Compact, stable JSON (the ConfigMap's ``directory.json``)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Directory:
        version = data.get("schemaVersion")
        if version != SCHEMA_VERSION:
            raise DirectoryError(
                f"directory schemaVersion {version!r} is not supported (expected "
                f"{SCHEMA_VERSION}); upgrade this client"
            )
        if data.get("hash") != HASH_NAME:
            raise DirectoryError(f"directory hash {data.get('hash')!r} is not {HASH_NAME!r}")
        try:
            table = tuple(int(s) for s in data["table"])
            if len(table) != data["partitions"]:
                raise DirectoryError(
                    f"table has {len(table)} entries but partitions is {data['partitions']}"
                )
            pending_data = data.get("pending")
            pending = (
                None
                if pending_data is None
                else Pending(
                    epoch=int(pending_data["epoch"]),
                    moves=tuple(
                        Move(int(m["partition"]), int(m["source"]), int(m["target"]))
                        for m in pending_data["moves"]
                    ),
                )
            )
            return cls(
                cluster=str(data["cluster"]),
                namespace=str(data["namespace"]),
                topic=str(data["topic"]),
                epoch=int(data["epoch"]),
                table=table,
                shards=tuple(
                    ShardEntry(
                        id=int(s["id"]),
                        name=str(s["name"]),
                        endpoint=str(s["endpoint"]),
                        zone=str(s.get("zone", "")),
                        replicas=tuple(
                            Replica(endpoint=str(r["endpoint"]), zone=str(r.get("zone", "")))
                            for r in s.get("replicas") or ()
                        ),
                    )
                    for s in data["shards"]
                ),
                pending=pending,
            )
        except (KeyError, TypeError) as exc:
            raise DirectoryError(f"directory document is missing or mistypes {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> Directory:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DirectoryError(f"directory is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise DirectoryError("directory must be a JSON object")
        return cls.from_dict(data)


def _shard_dict(shard: ShardEntry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": shard.id,
        "name": shard.name,
        "zone": shard.zone,
        "endpoint": shard.endpoint,
    }
    if shard.replicas:
        data["replicas"] = [{"endpoint": r.endpoint, "zone": r.zone} for r in shard.replicas]
    return data
