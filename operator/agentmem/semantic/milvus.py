"""The vector index in Milvus (a server, or Milvus Lite serving the same API).

One collection per cluster holds one row per indexed version of a key::

    id "<tenant>/<agent>/<key>@<version>"  tenant  agent  key  path
    partition  version  expires_at (0: never)  text  value (JSON, for filters)  vector

in Milvus partitions named after agentmem's (``p<partition>``; beyond 1024
partitions, ``p<partition mod 1024>``, Milvus's default limit). A search or a
delete names the partitions it is about, so Milvus looks only at their
segments: an agent's search at one partition's rows, a node's tenant-wide
search at the partitions it owns.

and a second, ``<collection>_offsets``, one row per partition: the offset of
the log the index reflects (Milvus wants a vector in every collection, so it
has a two-dimensional one that nothing searches).

Why the version is in the primary key: Milvus upserts are unconditional, so a
writer that fell behind (a replica that lost its lease on a partition during a
hand-off, a process paused for a minute) could otherwise overwrite a newer row
with an older one, and the newer vector would be gone for good. With the
version in the key, a late writer can only add an old row, never replace a new
one; it removes only rows older than what it writes. A search keeps a hit only
if its version is the key's current version in the serving node's own state
(newest wins, deleted and expired keys never show), so an old row is never an
answer, and the key's next write removes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from agentmem.semantic import SemanticConfig

log = logging.getLogger(__name__)

OUTPUT_FIELDS = ["tenant", "agent", "key", "partition", "version", "expires_at", "text"]
#: Milvus's default limit of partitions per collection.
MAX_MILVUS_PARTITIONS = 1024
#: Clients of one process make the collections one at a time.
_ENSURE = threading.Lock()
#: Paths whose old rows one delete names at most.
DELETE_CHUNK = 500


class IndexUnavailableError(Exception):
    """Milvus did not answer (or refused): what waits on it is retried."""


class IndexConfigError(Exception):
    """The collection exists with other dimensions or metric than configured."""


@dataclass(frozen=True)
class IndexRow:
    tenant: str
    agent: str
    key: str
    partition: int
    version: int
    expires_at: int | None
    text: str
    value: Any  # a JSON object, or None
    vector: list[float]

    @property
    def path(self) -> str:
        return f"{self.tenant}/{self.agent}/{self.key}"

    def entity(self) -> dict[str, Any]:
        return {
            "id": f"{self.path}@{self.version}",
            "tenant": self.tenant,
            "agent": self.agent,
            "key": self.key,
            "path": self.path,
            "partition": self.partition,
            "version": self.version,
            "expires_at": self.expires_at or 0,
            "text": self.text,
            "value": self.value,
            "vector": self.vector,
        }


@dataclass(frozen=True)
class Change:
    """One partition's change: the rows of ``replaced`` paths up to version ``upto``
    go, ``rows`` (each path's newest version) come."""

    partition: int
    replaced: Sequence[str]
    upto: int
    rows: Sequence[IndexRow]


@dataclass(frozen=True)
class Hit:
    tenant: str
    agent: str
    key: str
    partition: int
    version: int
    expires_at: int | None
    text: str
    score: float

    @property
    def path(self) -> str:
        return f"{self.tenant}/{self.agent}/{self.key}"


def _quoted(values: Iterable[str]) -> str:
    # Paths are made of checked names (no quote or backslash).
    return ", ".join(f'"{v}"' for v in values)


class MilvusIndex:
    """The cluster's collections; every call may raise IndexUnavailableError."""

    def __init__(self, config: SemanticConfig, partitions: int = 1) -> None:
        self.config = config
        self.buckets = max(1, min(partitions, MAX_MILVUS_PARTITIONS))
        self.name = config.collection
        self.offsets_name = f"{config.collection}_offsets"
        self._client: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                token = ""
                if self.config.token_file:
                    with open(self.config.token_file, encoding="utf-8") as f:
                        token = f.read().strip()
                kwargs: dict[str, Any] = {"uri": self.config.uri, "timeout": 5}
                if token:
                    kwargs["token"] = token
                if self.config.db_name:
                    kwargs["db_name"] = self.config.db_name
                try:
                    client = MilvusClient(**kwargs)
                    with _ENSURE:
                        try:
                            self._ensure(client)
                        except IndexConfigError:
                            raise
                        except Exception:
                            # Another process made the collections at the same moment:
                            # they exist now, so looking again finds them.
                            time.sleep(0.5)
                            self._ensure(client)
                except IndexConfigError:
                    raise
                except Exception as exc:
                    raise IndexUnavailableError(
                        f"Milvus at {self.config.uri} did not answer: {exc}"
                    ) from exc
                self._client = client
        return self._client

    def _ensure(self, client: Any) -> None:
        from pymilvus import DataType, MilvusClient

        c = self.config
        if client.has_collection(self.name):
            described = client.describe_collection(self.name)
            for f in described.get("fields", []):
                dim = f.get("params", {}).get("dim")
                if f.get("name") == "vector" and dim is not None and int(dim) != c.dimensions:
                    raise IndexConfigError(
                        f"the collection {self.name} holds vectors of {dim} dimensions, but "
                        f"semantic.dimensions is {c.dimensions}: name another collection, or "
                        "drop this one to index anew"
                    )
        else:
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=1024)
            schema.add_field("tenant", DataType.VARCHAR, max_length=128)
            schema.add_field("agent", DataType.VARCHAR, max_length=128)
            schema.add_field("key", DataType.VARCHAR, max_length=512)
            schema.add_field("path", DataType.VARCHAR, max_length=800)
            schema.add_field("partition", DataType.INT32)
            schema.add_field("version", DataType.INT64)
            schema.add_field("expires_at", DataType.INT64)
            schema.add_field("text", DataType.VARCHAR, max_length=65_535)
            schema.add_field("value", DataType.JSON, nullable=True)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=c.dimensions)
            params = client.prepare_index_params()
            params.add_index(
                field_name="vector", index_type=c.index_type, metric_type=c.metric,
                params=c.index_params,
            )  # fmt: skip
            client.create_collection(self.name, schema=schema, index_params=params)
            log.info("created the vector collection %s (%s, %s)", self.name, c.index_type, c.metric)
        if not client.has_collection(self.offsets_name):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("partition", DataType.INT64, is_primary=True)
            schema.add_field("offset", DataType.INT64)
            schema.add_field("log_time", DataType.INT64)
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
            params = client.prepare_index_params()
            params.add_index(field_name="v", index_type="FLAT", metric_type="L2")
            client.create_collection(self.offsets_name, schema=schema, index_params=params)
        present = set(client.list_partitions(self.name))
        for bucket in range(self.buckets):
            if f"p{bucket}" not in present:
                client.create_partition(self.name, f"p{bucket}")
        for name in (self.name, self.offsets_name):
            client.load_collection(name)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        client = self._connect()
        try:
            return getattr(client, fn)(*args, **kwargs)
        except Exception as exc:
            # Connect anew next time: a restarted Milvus has the collections released
            # (they are loaded again on connecting), and a broken channel is gone.
            with self._lock:
                if self._client is client:
                    self._client = None
            try:
                client.close()
            except Exception:  # pragma: no cover - closing a broken channel
                log.debug("closing the Milvus client", exc_info=True)
            raise IndexUnavailableError(f"Milvus {what} failed: {exc}") from exc

    def open(self) -> None:
        self._connect()

    def _partition(self, partition: int) -> str:
        return f"p{partition % self.buckets}"

    # Writes (one writer thread) -------------------------------------------------

    def apply(
        self, partition: int, replaced: Sequence[str], upto: int, rows: Sequence[IndexRow]
    ) -> None:
        """Remove the rows of ``replaced`` paths with versions up to ``upto``, then
        add ``rows`` (each a path's newest version, which the removal spared)."""
        self.write([Change(partition, replaced, upto, rows)])

    def write(self, changes: Sequence[Change]) -> None:
        """Several partitions' changes: one delete for all of them, then one upsert
        per partition (Milvus puts the rows of one call in one partition)."""
        conditions = []
        for change in changes:
            keep = {r.path: r.version for r in change.rows}
            for i in range(0, len(change.replaced), DELETE_CHUNK):
                chunk = change.replaced[i : i + DELETE_CHUNK]
                kept = [f"{p}@{keep[p]}" for p in chunk if p in keep]
                condition = (
                    f"(partition == {change.partition} and path in [{_quoted(chunk)}] "
                    f"and version <= {change.upto}"
                )
                if kept:
                    condition += f" and id not in [{_quoted(kept)}]"
                conditions.append(condition + ")")
        for i in range(0, len(conditions), 16):
            self._call("delete", "delete", self.name, filter=" or ".join(conditions[i : i + 16]))
        for change in changes:
            if change.rows:
                self._call(
                    "upsert", "upsert", self.name, [r.entity() for r in change.rows],
                    partition_name=self._partition(change.partition),
                )  # fmt: skip

    def set_offset(self, partition: int, offset: int, log_time: int) -> None:
        self.set_offsets([(partition, offset, log_time)])

    def set_offsets(self, offsets: Sequence[tuple[int, int, int]]) -> None:
        """Record what the index reflects: (partition, offset, log time) each."""
        rows = [
            {"partition": p, "offset": offset, "log_time": log_time, "v": [0.0, 0.0]}
            for p, offset, log_time in offsets
        ]
        self._call("offset upsert", "upsert", self.offsets_name, rows)

    def flush(self) -> None:
        """Seal what Milvus holds in memory into segments (which it then indexes)."""
        self._call("flush", "flush", self.name)

    def sweep(self, log_times: dict[int, int]) -> None:
        """Remove the rows expired by each partition's log time (one delete)."""
        conditions = [
            f"(partition == {p} and expires_at > 0 and expires_at <= {t})"
            for p, t in sorted(log_times.items())
        ]
        for i in range(0, len(conditions), 64):
            self._call("delete", "delete", self.name, filter=" or ".join(conditions[i : i + 64]))

    # Reads ----------------------------------------------------------------------

    def offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        """The offset the index reflects per partition (-1: nothing indexed)."""
        wanted = sorted(set(partitions))
        if not wanted:
            return {}
        rows = self._call(
            "offsets query", "query", self.offsets_name,
            filter=f"partition in [{', '.join(map(str, wanted))}]", output_fields=["offset"],
        )  # fmt: skip
        found = {int(r["partition"]): int(r["offset"]) for r in rows}
        return {p: found.get(p, -1) for p in wanted}

    def search(
        self, vector: list[float], limit: int, expr: str, partitions: Iterable[int]
    ) -> list[Hit]:
        names = sorted({self._partition(p) for p in partitions})
        answer = self._call(
            "search", "search", self.name, data=[vector], limit=limit, filter=expr,
            output_fields=OUTPUT_FIELDS, search_params={"params": self.config.search_params},
            anns_field="vector", partition_names=names,
        )  # fmt: skip
        hits = []
        for found in answer[0] if answer else []:
            e = found["entity"]
            hits.append(
                Hit(
                    e["tenant"],
                    e["agent"],
                    e["key"],
                    int(e["partition"]),
                    int(e["version"]),
                    int(e["expires_at"]) or None,
                    e["text"],
                    float(found["distance"]),
                )
            )
        return hits

    def count(self) -> int:
        rows = self._call("count", "query", self.name, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing a broken channel
                log.debug("closing the Milvus client", exc_info=True)
