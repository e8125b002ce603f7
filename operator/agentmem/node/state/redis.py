"""The production state: the co-located Redis, with the apply function as a Lua script.

One script call (``apply.lua``) applies a batch of one partition's events and
stores the partition's applied offset in the same atomic step; events at or
below the stored offset are skipped. The rules are those of
:mod:`agentmem.node.apply` (the reference), and a differential test on real
Redis checks they agree. Reads go through ``read.lua``, which checks in the
same step that the contents are the ones this node built.

Keys (Redis runs beside the node, one database per node):

- ``am:applied:{p}``  applied offset of partition p
- ``am:t:{p}``        log time (ms) of the last applied event of p
- ``am:r:{path}``     hash of a record: v (JSON text), ver, exp ('' or ms), upd
- ``am:i:{tenant/agent}``  set of the agent's keys
- ``am:a:{p}``        set of the agents (tenant/agent) that have keys in p
- ``am:e:{p}``        sorted set of expiring paths of p by expiry
- ``am:q:{p}``        hash of p's request ids (tenant/rid) -> outcome|log time
- ``am:ql:{p}``       list of p's request ids as log time|tenant/rid, oldest first
- ``am:marker``       identity of this store's contents; a flushed or replaced
  Redis lacks it, and the scripts refuse to run until the node rebuilt
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
import redis.asyncio as aioredis

from agentmem.eventlog.ports import LogRecord
from agentmem.node.apply import DEFAULT_DEDUP_WINDOW_MS, SWEEP_LIMIT, TRIM_LIMIT
from agentmem.node.state.ports import (
    PartitionSample,
    StateFullError,
    StateResetError,
    StateUnavailableError,
)
from agentmem.store.ports import Record, Snapshot

RESET = "AGENTMEM_STORE_RESET"
LOAD_CHUNK = 1000
READ_CONNECTIONS = 64


def _script(name: str) -> str:
    return resources.files("agentmem.node.state").joinpath(name).read_text(encoding="utf-8")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(values: Sequence[Any]) -> Record | None:
    value, version, expires, updated = values
    if value is None or version is None:
        return None
    return Record(
        value=_text(value),
        version=int(version),
        expires_at=int(expires) if expires else None,
        updated=int(updated or 0),
    )


class RedisState:
    """State in a co-located Redis."""

    def __init__(
        self, url: str, window_ms: int = DEFAULT_DEDUP_WINDOW_MS, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.window_ms = window_ms
        # A Redis that hangs (not only one that is gone) must surface as an error.
        self._sync = redis.Redis.from_url(url, socket_timeout=timeout)
        self._apply = self._sync.register_script(_script("apply.lua"))
        self._loaded = self._sync.register_script(_script("loaded.lua"))
        self._clean = self._sync.register_script(_script("clean.lua"))
        # Reads queue for a connection (at most READ_CONNECTIONS) rather than fail
        # with "too many connections" when many miss the cache at once.
        self._async = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url, max_connections=READ_CONNECTIONS, timeout=timeout, socket_timeout=timeout
            )
        )
        self._read = self._async.register_script(_script("read.lua"))
        self._lock = threading.Lock()
        self._marker = ""  # the contents the applier writes to
        self._serving = ""  # the contents reads accept (see serve_current)

    def _failed(self, exc: redis.exceptions.ResponseError) -> Exception:
        if RESET in str(exc):
            return StateResetError(f"Redis at {self.url} lost its data")
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or "maxmemory" in str(exc):
            return StateFullError(f"Redis at {self.url} is full: {exc}")
        return exc

    # Applier thread -------------------------------------------------------

    def check(self) -> None:
        policy = self._sync.config_get("maxmemory-policy").get("maxmemory-policy")
        if policy != "noeviction":
            raise RuntimeError(
                f"Redis at {self.url} has maxmemory-policy {policy}; agentmem needs noeviction "
                "(an evicted key would be silently lost state)"
            )

    def claim(self, wipe: bool = False) -> None:
        with self._lock:
            if wipe:
                for key in self._sync.scan_iter("am:*", count=1000):
                    self._sync.delete(key)
            marker = self._sync.get("am:marker")
            if marker is None:
                self._marker = uuid.uuid4().hex
                self._sync.set("am:marker", self._marker)
            else:
                self._marker = _text(marker)
            if not wipe:
                self._serving = self._marker

    def serve_current(self) -> None:
        """Let reads see the contents claimed last (after a wipe, once the node marked
        the partitions as rebuilding: before that, a read must fail, not see them)."""
        self._serving = self._marker

    def verify(self) -> None:
        marker = self._sync.get("am:marker")
        if marker is None or _text(marker) != self._marker:
            raise StateResetError(f"Redis at {self.url} lost its data")

    def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        values = self._sync.mget([f"am:applied:{p}" for p in partitions]) if partitions else []
        return {p: int(v) if v is not None else -1 for p, v in zip(partitions, values, strict=True)}

    def apply(self, partition: int, records: Sequence[LogRecord]) -> list[str | None]:
        args: list[Any] = [
            partition, self.window_ms, SWEEP_LIMIT, TRIM_LIMIT, len(records), self._marker,
        ]  # fmt: skip
        for r in records:
            args += [r.offset, r.timestamp, r.payload]
        try:
            with self._lock:
                result = self._apply(args=args)
        except redis.exceptions.ResponseError as exc:
            raise self._failed(exc) from exc
        return [_text(c) or None for c in result]

    def clean(self, partition: int) -> None:
        try:
            self._clean(args=[self._marker, partition, self.window_ms, 10_000])
        except redis.exceptions.ResponseError as exc:
            raise self._failed(exc) from exc

    def load(self, snapshot: Snapshot) -> None:
        p = snapshot.partition
        self.drop_partition(p)
        rows = list(snapshot.records.items())
        for i in range(0, len(rows), LOAD_CHUNK):
            pipe = self._sync.pipeline(transaction=False)
            for path, r in rows[i : i + LOAD_CHUNK]:
                tenant, agent, key = path.split("/", 2)
                exp = "" if r.expires_at is None else str(r.expires_at)
                pipe.hset(
                    f"am:r:{path}",
                    mapping={"v": r.value, "ver": r.version, "exp": exp, "upd": r.updated},
                )
                pipe.sadd(f"am:i:{tenant}/{agent}", key)
                pipe.sadd(f"am:a:{p}", f"{tenant}/{agent}")
                if r.expires_at is not None:
                    pipe.zadd(f"am:e:{p}", {path: r.expires_at})
            self._execute(pipe)
        rids = sorted(snapshot.request_ids.items(), key=lambda kv: (kv[1].log_time, kv[0]))
        for i in range(0, len(rids), LOAD_CHUNK):
            chunk = rids[i : i + LOAD_CHUNK]
            pipe = self._sync.pipeline(transaction=False)
            pipe.hset(f"am:q:{p}", mapping={k: f"{r.code}|{r.log_time}" for k, r in chunk})
            pipe.rpush(f"am:ql:{p}", *[f"{r.log_time}|{k}" for k, r in chunk])
            self._execute(pipe)
        if snapshot.stored.offset >= 0:
            try:
                stored = snapshot.stored
                self._loaded(args=[self._marker, p, stored.offset, stored.log_time])
            except redis.exceptions.ResponseError as exc:
                raise self._failed(exc) from exc

    def _execute(self, pipe: Any) -> None:
        try:
            pipe.execute()
        except redis.exceptions.ResponseError as exc:
            raise self._failed(exc) from exc

    def drop_partition(self, partition: int) -> None:
        r = self._sync
        # The offset goes first: should this stop halfway, the partition is
        # loaded or replayed from the start if it ever comes back.
        r.delete(f"am:applied:{partition}", f"am:t:{partition}")
        for agent_path in r.smembers(f"am:a:{partition}"):
            agent = _text(agent_path)
            keys = [_text(k) for k in r.smembers(f"am:i:{agent}")]
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.delete(f"am:r:{agent}/{key}")
            pipe.delete(f"am:i:{agent}")
            pipe.execute()
        r.delete(
            f"am:a:{partition}", f"am:e:{partition}", f"am:q:{partition}", f"am:ql:{partition}"
        )

    def stored_partitions(self) -> list[int]:
        keys = self._sync.scan_iter("am:applied:*", count=1000)
        return sorted(int(_text(k).rsplit(":", 1)[1]) for k in keys)

    # Sampler thread ---------------------------------------------------------

    def sample(self, partitions: Sequence[int]) -> dict[int, PartitionSample]:
        pipe = self._sync.pipeline(transaction=False)
        for p in partitions:
            pipe.get(f"am:t:{p}")
            pipe.zrange(f"am:e:{p}", 0, 0, withscores=True)
            pipe.lindex(f"am:ql:{p}", 0)
            pipe.hlen(f"am:q:{p}")
        values = pipe.execute()
        out = {}
        for i, p in enumerate(partitions):
            log_time, expiry, oldest, count = values[4 * i : 4 * i + 4]
            out[p] = PartitionSample(
                log_time=int(log_time) if log_time is not None else None,
                next_expiry=int(expiry[0][1]) if expiry else None,
                oldest_request_id=int(_text(oldest).split("|", 1)[0]) if oldest else None,
                request_ids=int(count),
            )
        return out

    def memory(self) -> tuple[int, int]:
        info = self._sync.info("memory")
        return int(info["used_memory"]), int(info.get("maxmemory", 0))

    def close_sync(self) -> None:
        """Close a store used without an event loop (tests, tools)."""
        self._sync.close()

    # Request path -----------------------------------------------------------

    async def _checked_read(self, keys: list[str], mode: str) -> Any:
        try:
            return await self._read(keys=keys, args=[self._serving, mode])
        except redis.exceptions.ResponseError as exc:
            raise self._failed(exc) from exc
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise StateUnavailableError(f"Redis at {self.url} does not answer: {exc}") from exc

    async def get_many(self, paths: Sequence[str]) -> list[Record | None]:
        if not paths:
            return []
        rows = await self._checked_read([f"am:r:{p}" for p in paths], "records")
        return [_record(row) for row in rows]

    async def keys(self, agent_path: str) -> list[str]:
        members = await self._checked_read([f"am:i:{agent_path}"], "members")
        return sorted(_text(k) for k in members)

    async def agents(self, tenant: str, partitions: Sequence[int]) -> list[str]:
        if not partitions:
            return []
        prefix = f"{tenant}/"
        sets = await self._checked_read([f"am:a:{p}" for p in partitions], "union")
        paths = sorted(_text(m) for m in sets if _text(m).startswith(prefix))
        if not paths:
            return []
        # An agent whose last key was deleted may stay in the partition's set.
        sizes = await self._checked_read([f"am:i:{path}" for path in paths], "sizes")
        return [path[len(prefix) :] for path, n in zip(paths, sizes, strict=True) if int(n)]

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()

    def snapshot(self) -> dict[str, Any]:
        """The logical state, shaped like :meth:`MemoryState.snapshot` (for tests)."""
        r = self._sync
        applied = {
            int(_text(k).rsplit(":", 1)[1]): int(r.get(k) or -1) for k in r.keys("am:applied:*")
        }
        times = {
            int(_text(k).rsplit(":", 1)[1]): int(v)
            for k in r.keys("am:t:*")
            if (v := r.get(k)) is not None
        }
        records = {}
        for p in applied:
            for agent_path in r.smembers(f"am:a:{p}"):
                agent = _text(agent_path)
                for key in r.smembers(f"am:i:{agent}"):
                    path = f"{agent}/{_text(key)}"
                    rec = _record(r.hmget(f"am:r:{path}", ["v", "ver", "exp", "upd"]))
                    if rec is not None and rec.live(times.get(p, 0)):
                        records[path] = (rec.value, rec.version, rec.expires_at)
        rids = {}
        for p in applied:
            for key, value in r.hgetall(f"am:q:{p}").items():
                code, _, ts = _text(value).rpartition("|")
                if times.get(p, 0) - int(ts) < self.window_ms:
                    rids[f"{p}:{_text(key)}"] = code
        return {
            "applied": dict(sorted(applied.items())),
            "records": dict(sorted(records.items())),
            "request_ids": dict(sorted(rids.items())),
        }
