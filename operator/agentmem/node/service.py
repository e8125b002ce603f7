"""The memory node: write path, read path, and the applier that follows the log.

Write: validate, find the partition, check this shard owns it, append one
event, wait until this node has applied that event, answer with its outcome.
An acknowledged write is therefore in the log (acks=all) and decided.

Read: from the local state, after waiting for a version token (session) or
for the partition's log end (strong) when asked.

The applier is one thread: it reads the partitions this node owns (and those
it is warming up for a rebalance), applies them in batches to the state store
and hands the outcomes to the event loop, which wakes the waiting writers,
session readers and watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from agentmem.directory import Directory, DirectoryError, partition_for
from agentmem.directory.names import Address
from agentmem.node.apply import MemoryState, Outcome, Record, merge_patch
from agentmem.node.events import Event, EventDecodeError, Expect
from agentmem.node.metrics import NodeMetrics
from agentmem.node.ports import (
    LogReader,
    LogRecord,
    LogUnavailableError,
    LogWriter,
    StateStore,
    StoreFullError,
    StoreResetError,
)

log = logging.getLogger(__name__)

Consistency = Literal["eventual", "session", "strong"]
MERGE_ATTEMPTS = 16
HEARTBEAT_SECONDS = 15.0


class NodeError(Exception):
    """An answer other than success: HTTP status, machine code, message for people."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


@dataclass(frozen=True)
class Version:
    """A version token: the (partition, offset) of the event that last changed a key."""

    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, text: str, partitions: int) -> Version:
        part, sep, off = text.strip().strip('"').partition(":")
        if not sep or not part.isdigit() or not off.isdigit():
            raise NodeError(
                400,
                "invalid_version",
                f"version {text!r} is not a version token of the form <partition>:<offset>",
            )
        version = cls(int(part), int(off))
        if version.partition >= partitions:
            raise NodeError(
                400,
                "unknown_partition",
                f"version {text!r} names partition {version.partition}, but the cluster has "
                f"partitions 0..{partitions - 1}",
            )
        return version


@dataclass
class NodeConfig:
    partitions: int
    cluster: str = "agentmem"
    shard: int = 0
    topic: str = ""
    directory_file: str | None = None
    max_value_bytes: int = 1024 * 1024
    cache_entries: int = 100_000
    wait_timeout: float = 10.0
    memory_admission: float = 0.95
    node_name: str = field(default_factory=lambda: os.environ.get("HOSTNAME", "node"))


@dataclass(frozen=True)
class WriteResult:
    outcome: Outcome
    version: Version | None
    current: Version | None


@dataclass
class _View:
    """What the node serves, from the directory (or everything, without one)."""

    epoch: int = 0
    directory: Directory | None = None
    owned: frozenset[int] = frozenset()
    warming: frozenset[int] = frozenset()


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """One memory node (one replica of one shard)."""

    #: Changes a watcher may fall behind before its stream ends with "overflow".
    WATCH_QUEUE = 10_000

    def __init__(
        self,
        config: NodeConfig,
        writer: LogWriter,
        reader: LogReader,
        meta: LogReader,
        store: StateStore,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.config = config
        self.writer = writer
        self.reader = reader
        self.meta = meta
        self.store = store
        self.metrics = metrics or NodeMetrics(config.cluster, config.shard)
        self.view = _View()
        self.applied: dict[int, int] = {}
        self.high: dict[int, int] = {}
        self.memory: tuple[int, int] = (0, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[tuple[int, int], list[asyncio.Future[str]]] = defaultdict(list)
        self._outcomes: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._applied_waiters: dict[int, list[tuple[int, asyncio.Future[None]]]] = defaultdict(list)
        self._watchers: dict[str, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._overflowed: set[asyncio.Queue[dict[str, Any]]] = set()
        self._applier: _Applier | None = None
        self._sampler: _Sampler | None = None
        self._directory_task: asyncio.Task[None] | None = None
        self._directory_mtime = 0.0
        self._closing = False
        self.log_error: str | None = None
        self.applier_error: str | None = None
        # Records (or their absence) read from the store, kept coherent by the
        # applier: it is the store's only writer and drops the paths it changes.
        self._cache: dict[str, Record | None] = {}
        self._inflight: dict[str, int] = {}
        self._dirty: set[str] = set()

    # Lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self.store.check)
        count = await asyncio.to_thread(self.meta.partition_count)
        if count != self.config.partitions:
            raise RuntimeError(
                f"the event log has {count} partitions but this cluster has "
                f"{self.config.partitions}; a node must not serve a log partitioned differently"
            )
        self._reload_directory(force=True)
        consumed = sorted(self.view.owned | self.view.warming)
        self.applied = await asyncio.to_thread(self.store.applied_offsets, consumed)
        self._applier = _Applier(self, consumed)
        self._applier.start()
        self._sampler = _Sampler(self, self._applier)
        self._sampler.start()
        if self.config.directory_file:
            self._directory_task = asyncio.create_task(self._follow_directory())

    def close_watchers(self) -> None:
        """End every watch stream (on shutdown)."""
        self._closing = True
        for queues in self._watchers.values():
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait({})

    async def stop(self) -> None:
        self.close_watchers()
        if self._directory_task is not None:
            self._directory_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._directory_task
        if self._sampler is not None:
            self._sampler.stop()
            await asyncio.to_thread(self._sampler.join, 10)
        if self._applier is not None:
            self._applier.stop()
            await asyncio.to_thread(self._applier.join, 10)
        await self.writer.close()
        await asyncio.to_thread(self.reader.close)
        await asyncio.to_thread(self.meta.close)
        await self.store.aclose()

    # Directory ---------------------------------------------------------------

    def _reload_directory(self, force: bool = False) -> bool:
        """Read the directory file when it changed; True when the view changed."""
        path = self.config.directory_file
        if not path:
            if force:
                self.view = _View(owned=frozenset(range(self.config.partitions)))
            return force
        try:
            mtime = os.stat(path).st_mtime
            if not force and mtime == self._directory_mtime:
                return False
            with open(path, encoding="utf-8") as f:
                directory = Directory.from_json(f.read())
        except (OSError, DirectoryError) as exc:
            if force:
                raise RuntimeError(f"cannot read the directory {path}: {exc}") from exc
            log.warning("keeping directory epoch %s: %s", self.view.epoch, exc)
            return False
        self._directory_mtime = mtime
        if directory.partitions != self.config.partitions:
            raise RuntimeError(
                f"directory {path} has {directory.partitions} partitions, the node "
                f"{self.config.partitions}"
            )
        shard = self.config.shard
        owned = frozenset(directory.partitions_of(shard))
        warming = frozenset(
            m.partition
            for m in (directory.pending.moves if directory.pending else ())
            if m.target == shard
        )
        changed = (owned, warming) != (self.view.owned, self.view.warming)
        self.view = _View(directory.epoch, directory, owned, warming)
        if changed and self._applier is not None:
            self._applier.reassign(sorted(owned | warming))
        return changed

    async def _follow_directory(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self._reload_directory()
            except RuntimeError as exc:
                log.error("%s", exc)

    def route(self, addr: Address, client_epoch: int | None = None) -> int:
        """The partition of an address, if this node serves it; else a redirect."""
        p = partition_for(addr.tenant, addr.agent, self.config.partitions)
        view = self.view
        if client_epoch is not None and client_epoch > view.epoch:
            self._reload_directory()
            view = self.view
            if client_epoch > view.epoch:
                raise NodeError(
                    421,
                    "stale_node",
                    f"this node has directory epoch {view.epoch} but the request was routed "
                    f"with epoch {client_epoch}; retry in a moment",
                    headers={"Retry-After": "1"},
                    extra={"epoch": view.epoch},
                )
        if p in view.owned:
            return p
        directory = view.directory
        if directory is None:  # pragma: no cover - without a directory every partition is owned
            raise NodeError(503, "no_directory", "this node has no directory yet")
        owner = directory.owner(p)
        raise NodeError(
            307,
            "wrong_shard",
            f"partition {p} is served by shard {owner.id} ({owner.endpoint}) at epoch "
            f"{directory.epoch}",
            headers={"Location": f"http://{owner.endpoint}"},
            extra={
                "epoch": directory.epoch,
                "partition": p,
                "owner": {"shard": owner.id, "endpoint": owner.endpoint, "zone": owner.zone},
            },
        )

    # Applier callbacks (event loop thread) ----------------------------------------

    def _on_applied(
        self, partition: int, records: Sequence[LogRecord], codes: Sequence[str | None]
    ) -> None:
        last = self.applied.get(partition, -1)
        watched = bool(self._watchers)
        for record, code in zip(records, codes, strict=True):
            if code is None:
                continue
            if code.startswith("a"):
                self._forget(record.key.decode())
            key = (partition, record.offset)
            self._outcomes[key] = code
            for fut in self._waiters.pop(key, ()):
                if not fut.done():
                    fut.set_result(code)
            if watched and not code.startswith(("c", "d", "x")):
                self._publish(partition, record, code)
            last = max(last, record.offset)
        while len(self._outcomes) > 100_000:
            self._outcomes.popitem(last=False)
        self.applied[partition] = last
        waiting = self._applied_waiters.get(partition)
        if waiting:
            still = []
            for target, reached in waiting:
                if target <= last:
                    if not reached.done():
                        reached.set_result(None)
                else:
                    still.append((target, reached))
            self._applied_waiters[partition] = still

    def _on_watermarks(self, high: dict[int, int], log_times: dict[int, int]) -> None:
        self.high.update(high)
        now = now_ms()
        lag_messages = 0
        lag_seconds = 0.0
        for p in self.view.owned:
            behind = max(0, high.get(p, 0) - 1 - self.applied.get(p, -1))
            lag_messages += behind
            if behind and p in log_times:
                lag_seconds = max(lag_seconds, (now - log_times[p]) / 1000)
        self.metrics.event_lag_messages.set(lag_messages)
        self.metrics.event_lag_seconds.set(lag_seconds)

    def _on_memory(self, used: int, maximum: int) -> None:
        self.memory = (used, maximum)
        self.metrics.redis_used.set(used)
        self.metrics.redis_max.set(maximum)

    def _on_reset(self, partitions: list[int]) -> None:
        """The store was emptied: nothing is applied until the replay catches up."""
        for p in partitions:
            self.applied[p] = -1
        self._forget_all()
        self.metrics.store_resets.inc()

    # The record cache ------------------------------------------------------------

    def _forget(self, path: str) -> None:
        self._cache.pop(path, None)
        if path in self._inflight:
            self._dirty.add(path)

    def _forget_all(self) -> None:
        self._cache.clear()
        self._dirty.update(self._inflight)

    def _remember(self, path: str, record: Record | None) -> None:
        cache = self._cache
        if len(cache) >= self.config.cache_entries:
            cache.pop(next(iter(cache)))  # the oldest entry
        cache[path] = record

    async def _fetch(self, paths: Sequence[str]) -> list[Record | None]:
        """Records from the store, remembered unless the applier changed them meanwhile."""
        inflight = self._inflight
        for path in paths:
            inflight[path] = inflight.get(path, 0) + 1
        try:
            if len(paths) == 1:
                records = [await self.store.get(paths[0])]
            else:
                records = await self.store.get_many(paths)
        finally:
            changed = []
            for path in paths:
                left = inflight[path] - 1
                changed.append(path in self._dirty)
                if left:
                    inflight[path] = left
                else:
                    del inflight[path]
                    self._dirty.discard(path)
        for path, record, stale in zip(paths, records, changed, strict=True):
            if not stale:
                self._remember(path, record)
        return records

    async def _records(self, paths: Sequence[str]) -> list[Record | None]:
        cache = self._cache
        out: list[Record | None] = []
        missing: list[str] = []
        for path in paths:
            if path in cache:
                out.append(cache[path])
            else:
                out.append(None)
                missing.append(path)
        self.metrics.hits.inc(len(paths) - len(missing))
        if missing:
            self.metrics.misses.inc(len(missing))
            fetched = dict(zip(missing, await self._fetch(missing), strict=True))
            out = [fetched.get(p, r) for p, r in zip(paths, out, strict=True)]
        now = now_ms()
        return [r if r is not None and r.live(now) else None for r in out]

    @property
    def fatal(self) -> str | None:
        """Why this node cannot take writes now, if it cannot."""
        return self.applier_error or self.log_error

    def _on_log_error(self, message: str | None) -> None:
        self.log_error = message

    def _on_applier_error(self, message: str | None) -> None:
        self.applier_error = message

    def _on_assigned(self, starts: dict[int, int], dropped: list[int]) -> None:
        """The applier now reads these partitions from these stored offsets."""
        for p, offset in starts.items():
            self.applied[p] = offset
        for p in dropped:
            self.applied.pop(p, None)
            self.high.pop(p, None)

    def alive(self) -> bool:
        return self._applier is not None and self._applier.is_alive()

    # Readiness -----------------------------------------------------------------

    def caught_up(self) -> bool:
        """Every owned partition applied up to the last sampled log end."""
        if not self.view.owned:
            return True
        if not set(self.view.owned) <= self.high.keys():
            return False
        return all(self.applied.get(p, -1) >= self.high[p] - 1 for p in self.view.owned)

    def status(self) -> dict[str, Any]:
        partitions = sorted(self.view.owned | self.view.warming)
        return {
            "shard": self.config.shard,
            "epoch": self.view.epoch,
            "ready": self.caught_up(),
            "partitions": {
                str(p): {
                    "owned": p in self.view.owned,
                    "warming": p in self.view.warming,
                    "applied": self.applied.get(p, -1),
                    "high": self.high.get(p),
                }
                for p in partitions
            },
        }

    # Waiting -------------------------------------------------------------------

    async def wait_applied(self, partition: int, offset: int, timeout: float | None = None) -> None:
        if self.applied.get(partition, -1) >= offset:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._applied_waiters[partition].append((offset, fut))
        try:
            await asyncio.wait_for(fut, timeout or self.config.wait_timeout)
        except TimeoutError:
            raise NodeError(
                504,
                "not_caught_up",
                f"partition {partition} has not reached offset {offset} on this node within "
                f"{timeout or self.config.wait_timeout}s; retry, or read from another replica",
                headers={"Retry-After": "1"},
            ) from None

    async def _outcome(self, partition: int, offset: int) -> str:
        code = self._outcomes.get((partition, offset))
        if code is not None:
            return code
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        self._waiters[(partition, offset)].append(fut)
        try:
            return await asyncio.wait_for(fut, self.config.wait_timeout)
        except TimeoutError:
            raise NodeError(
                504,
                "apply_timeout",
                f"the write is in the log at {partition}:{offset} but this node has not applied "
                "it yet; retry with the same request id to learn its outcome",
                headers={"Retry-After": "1"},
            ) from None

    # Writes --------------------------------------------------------------------

    def _admit(self) -> None:
        used, maximum = self.memory
        if maximum and used >= maximum * self.config.memory_admission:
            self.metrics.rejected_full.inc()
            raise NodeError(
                507,
                "store_full",
                f"this shard's state store is {used * 100 // maximum}% full; writes are refused "
                "until it has room: raise spec.cache.memoryLimit or add shards",
            )
        if self.fatal:
            raise NodeError(503, "unavailable", self.fatal, headers={"Retry-After": "5"})

    async def append(
        self,
        addr: Address,
        op: Literal["put", "merge", "delete"],
        value: str | None,
        expect: Expect,
        expires_at: int | None,
        rid: str,
        actor: str,
        client_epoch: int | None = None,
    ) -> WriteResult:
        started = time.perf_counter()
        p = self.route(addr, client_epoch)
        self._admit()
        event = Event(
            op=op,
            tenant=addr.tenant,
            agent=addr.agent,
            key=addr.key,
            value=value,
            expect=expect,
            expires_at=expires_at,
            rid=rid,
            actor=actor,
            ts=now_ms(),
        )
        try:
            offset = await self.writer.append(p, addr.path.encode(), event.encode())
        except LogUnavailableError as exc:
            raise NodeError(
                503,
                "log_unavailable",
                f"{exc}; nothing was acknowledged: retry with the same request id",
                headers={"Retry-After": "1"},
            ) from exc
        outcome = Outcome.parse(await self._outcome(p, offset))
        self.metrics.write_latency.observe(time.perf_counter() - started)
        if outcome.status == "applied" and outcome.version is not None:
            return WriteResult(outcome, Version(p, outcome.version), None)
        if outcome.status == "conflict":
            current = Version(p, outcome.version) if outcome.version is not None else None
            return WriteResult(outcome, None, current)
        raise NodeError(500, "invalid_event", "the event could not be applied")  # pragma: no cover

    async def merge(
        self,
        addr: Address,
        patch: Any,
        expect: Expect,
        ttl_ms: int | None,
        rid: str,
        actor: str,
        client_epoch: int | None = None,
    ) -> WriteResult:
        """JSON merge patch, resolved here into the whole new value.

        The event carries the merged value with compare-and-set on the version it
        was computed from, so the log alone rebuilds the key after compaction.
        Without a caller's expectation, conflicts with concurrent writers are
        retried on fresh state.
        """
        p = self.route(addr, client_epoch)
        for attempt in range(MERGE_ATTEMPTS):
            record = await self._live(addr)
            if (expect == "absent" and record is not None) or (
                isinstance(expect, int) and (record is None or record.version != expect)
            ):
                return WriteResult(
                    Outcome("conflict", record.version if record else None),
                    None,
                    Version(p, record.version) if record else None,
                )
            base = json.loads(record.value) if record is not None else None
            merged = json.dumps(merge_patch(base, patch), separators=(",", ":"))
            expires_at = now_ms() + ttl_ms if ttl_ms else (record.expires_at if record else None)
            condition: Expect = record.version if record is not None else "absent"
            result = await self.append(
                addr, "merge", merged, condition, expires_at,
                rid if attempt == 0 else f"{rid}/{attempt}", actor, client_epoch,
            )  # fmt: skip
            if result.outcome.status == "applied" or expect is not None:
                return result
            if result.current is not None:
                await self.wait_applied(p, result.current.offset)
        raise NodeError(
            409,
            "contended",
            f"the key changed {MERGE_ATTEMPTS} times while merging; retry",
        )

    # Reads ---------------------------------------------------------------------

    async def _live(self, addr: Address) -> Record | None:
        return (await self._records([addr.path]))[0]

    async def _consistent(
        self, p: int, consistency: Consistency, min_version: Version | None
    ) -> None:
        if min_version is not None:
            if min_version.partition != p:
                raise NodeError(
                    400,
                    "foreign_version",
                    f"min_version {min_version} is of partition {min_version.partition}, but "
                    f"this agent's keys are in partition {p}",
                )
            await self.wait_applied(p, min_version.offset)
        if consistency == "strong":
            high = (await asyncio.to_thread(self.meta.high_watermarks, [p]))[p]
            await self.wait_applied(p, high - 1)

    async def get(
        self,
        addr: Address,
        consistency: Consistency = "eventual",
        min_version: Version | None = None,
        client_epoch: int | None = None,
    ) -> tuple[int, Record | None]:
        started = time.perf_counter()
        p = self.route(addr, client_epoch)
        await self._consistent(p, consistency, min_version)
        record = await self._live(addr)
        self.metrics.read_latency.observe(time.perf_counter() - started)
        return p, record

    async def get_many(
        self,
        tenant: str,
        agent: str,
        keys: Sequence[str],
        consistency: Consistency = "eventual",
        min_version: Version | None = None,
        client_epoch: int | None = None,
    ) -> tuple[int, list[Record | None]]:
        started = time.perf_counter()
        addrs = [Address.parse(tenant, agent, k) for k in keys]
        p = self.route(Address(tenant, agent, "_"), client_epoch)
        await self._consistent(p, consistency, min_version)
        live = await self._records([a.path for a in addrs])
        self.metrics.read_latency.observe(time.perf_counter() - started)
        return p, live

    async def keys(
        self,
        tenant: str,
        agent: str,
        consistency: Consistency = "eventual",
        min_version: Version | None = None,
        client_epoch: int | None = None,
    ) -> list[str]:
        p = self.route(Address(tenant, agent, "_"), client_epoch)
        await self._consistent(p, consistency, min_version)
        agent_path = f"{tenant}/{agent}"
        keys = await self.store.keys(agent_path)
        if not keys:
            return []
        records = await self._records([f"{agent_path}/{k}" for k in keys])
        return [k for k, r in zip(keys, records, strict=True) if r is not None]

    # History and watch -------------------------------------------------------------

    async def history(
        self, tenant: str, agent: str, after: int, limit: int, client_epoch: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """The agent's events after offset ``after`` (-1: all), each with its outcome.

        The log keeps every event of the audit window (older ones are compacted to
        the newest per key). Outcomes are not in the log, so the agent's events are
        replayed from the start of the partition with the apply rules; an event
        whose condition names a version older than what the log still holds is
        reported with outcome "unknown". Returns the events and the offset to
        continue after.
        """
        p = self.route(Address(tenant, agent, "_"), client_epoch)
        high = (await asyncio.to_thread(self.meta.high_watermarks, [p]))[p]
        replay = MemoryState()
        first: int | None = None
        cursor = -1
        out: list[dict[str, Any]] = []
        while cursor < high - 1 and len(out) < limit:
            batch = await asyncio.to_thread(self.meta.scan, p, cursor + 1, high, 5000)
            if not batch:
                break
            for record in batch:
                cursor = record.offset
                first = record.offset if first is None else first
                try:
                    event = Event.decode(record.payload)
                except EventDecodeError:
                    continue
                if event.tenant != tenant or event.agent != agent:
                    continue
                code = replay.apply(p, record.offset, record.timestamp, record.payload) or "x"
                if record.offset <= after:
                    continue
                entry = _entry(event, p, record)
                outcome = Outcome.parse(code)
                if outcome.duplicate:
                    entry["outcome"] = "duplicate"
                elif (
                    outcome.status == "conflict"
                    and isinstance(event.expect, int)
                    and event.expect < first
                ):
                    entry["outcome"] = "unknown"
                else:
                    entry["outcome"] = outcome.status
                out.append(entry)
                if len(out) >= limit:
                    break
        return out, cursor

    def _publish(self, partition: int, record: LogRecord, code: str) -> None:
        try:
            event = Event.decode(record.payload)
        except EventDecodeError:
            return
        queues = self._watchers.get(f"{event.tenant}/{event.agent}")
        if not queues:
            return
        entry = _entry(event, partition, record)
        for queue in list(queues):
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:
                self._overflowed.add(queue)

    async def watch(
        self, tenant: str, agent: str, after: int | None, client_epoch: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Changes of an agent's keys as they are applied; from ``after`` when given.

        Yields an empty dict as a heartbeat when nothing changed for a while, and
        ends with ``{"overflow": True, "resume_after": version}`` when the watcher
        fell more than the queue's length behind (it resumes with ``after``).
        """
        p = self.route(Address(tenant, agent, "_"), client_epoch)
        agent_path = f"{tenant}/{agent}"
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=self.WATCH_QUEUE)
        self._watchers[agent_path].add(queue)
        try:
            last = after if after is not None else self.applied.get(p, -1)
            if after is not None:
                upto = self.applied.get(p, -1)
                while last < upto:
                    batch, cursor = await self.history(tenant, agent, last, 500, client_epoch)
                    for entry in batch:
                        if entry["offset"] <= upto and entry.pop("outcome") == "applied":
                            yield entry
                    if cursor <= last:
                        break
                    last = min(cursor, upto)
            while not self._closing:
                try:
                    entry = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    yield {}  # a heartbeat: lets the server notice a gone client
                    continue
                if not entry:  # the node is stopping
                    return
                if entry["offset"] > last:
                    last = entry["offset"]
                    yield entry
                if queue in self._overflowed and queue.empty():
                    # The watcher fell too far behind: say where to resume, then end.
                    yield {"overflow": True, "resume_after": f"{p}:{last}"}
                    return
        finally:
            self._overflowed.discard(queue)
            self._watchers[agent_path].discard(queue)
            if not self._watchers[agent_path]:
                del self._watchers[agent_path]


def _entry(event: Event, partition: int, record: LogRecord) -> dict[str, Any]:
    return {
        "version": f"{partition}:{record.offset}",
        "offset": record.offset,
        "op": event.op,
        "key": event.key,
        "value": None if event.value is None else json.loads(event.value),
        "expires_at": event.expires_at,
        "actor": event.actor,
        "request_id": event.rid,
        "time": record.timestamp,
    }


class _Sampler(threading.Thread):
    """Samples the log end, the store's memory and its integrity twice a second.

    It uses the node's metadata reader, so the applier never pauses for it.
    """

    def __init__(self, node: Node, applier: _Applier) -> None:
        super().__init__(name="agentmem-sampler", daemon=True)
        self.node = node
        self.applier = applier
        self._stop_flag = threading.Event()

    def stop(self) -> None:
        self._stop_flag.set()

    def run(self) -> None:
        node = self.node
        while not self._stop_flag.wait(0.5):
            partitions = list(self.applier.partitions)
            if not partitions:
                continue
            try:
                high = node.meta.high_watermarks(partitions)
                times = node.store.log_times(partitions)
                memory = node.store.memory()
            except LogUnavailableError as exc:
                self.applier._post(
                    node._on_log_error, f"{exc}; writes are refused until it is back"
                )
                continue
            except Exception as exc:
                log.warning("sampling failed: %s", exc)
                continue
            self.applier._post(node._on_watermarks, high, times)
            self.applier._post(node._on_memory, *memory)
            self.applier._post(node._on_log_error, None)
            self.applier.check_store()


class _Applier(threading.Thread):
    """Reads the log and applies it to the store; reports to the event loop.

    It never stops on an error: it reports it, waits a second and reads again
    from the offsets the store has applied (never skipping an event).
    """

    BATCH = 2000

    def __init__(self, node: Node, partitions: Sequence[int]) -> None:
        super().__init__(name="agentmem-applier", daemon=True)
        self.node = node
        self._stop_flag = threading.Event()
        self._lock = threading.Lock()
        self._target: list[int] = list(partitions)
        self._pending: list[int] | None = list(partitions)
        self._partitions: list[int] = []
        self._claimed = False
        self._errored = False
        self._reset_requested = threading.Event()

    @property
    def partitions(self) -> list[int]:
        return self._partitions

    def check_store(self) -> None:
        """Ask the applier to verify the store (it rebuilds when the store was emptied)."""
        self._reset_requested.set()

    def reassign(self, partitions: Sequence[int]) -> None:
        with self._lock:
            self._target = list(partitions)
            self._pending = list(partitions)

    def stop(self) -> None:
        self._stop_flag.set()

    def _post(self, fn: Any, *args: Any) -> None:
        loop = self.node._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _assign(self, partitions: list[int]) -> None:
        node = self.node
        previous = set(self._partitions)
        if not self._claimed:
            node.store.claim()
            self._claimed = True
            # A store that outlived the node (persistence) may hold partitions
            # that moved away while the node was down.
            previous = set(node.store.stored_partitions())
        dropped = sorted(previous - set(partitions))
        for p in dropped:
            node.store.drop_partition(p)
            log.info("dropped partition %s: it moved to another shard", p)
        starts = node.store.applied_offsets(partitions)
        node.reader.assign({p: o + 1 for p, o in starts.items()})
        self._partitions = partitions
        self._post(node._on_assigned, starts, dropped)
        if dropped:
            self._post(node._forget_all)

    def _step(self) -> None:
        node = self.node
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            try:
                self._assign(pending)
            except Exception:
                with self._lock:  # try the same target again, not the old one
                    if self._pending is None:
                        self._pending = pending
                raise
        records = node.reader.poll(self.BATCH, 0.05)
        if records:
            by_partition: dict[int, list[LogRecord]] = defaultdict(list)
            for record in records:
                by_partition[record.partition].append(record)
            for p, batch in by_partition.items():
                codes = node.store.apply(p, batch)
                self._post(node._on_applied, p, batch, codes)
                node.metrics.events_applied.inc(len(batch))
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            node.store.verify()

    def run(self) -> None:
        while not self._stop_flag.is_set():
            try:
                self._step()
                if self._errored:
                    self._errored = False
                    self._post(self.node._on_applier_error, None)
            except Exception as exc:
                self._errored = True
                try:
                    self._handle(exc)
                except Exception:
                    log.exception("recovering from an applier error failed; retrying")
                self._recover()

    def _handle(self, exc: Exception) -> None:
        node = self.node
        # Whatever the store did before failing, the cache must not outlive it.
        self._post(node._forget_all)
        if isinstance(exc, StoreResetError):
            log.warning("%s: rebuilding every partition from the event log", exc)
            node.store.claim(wipe=True)
            self._post(node._on_reset, list(self._partitions))
            self._errored = False
        elif isinstance(exc, LogUnavailableError):
            log.warning("%s; retrying", exc)
            self._post(node._on_applier_error, f"{exc}; writes are refused until it is back")
        elif isinstance(exc, StoreFullError):
            self._post(node._on_applier_error, f"{exc}; the node stopped applying events")
        else:
            log.error("applier error; re-reading from the stored offsets", exc_info=exc)
            self._post(node._on_applier_error, f"applier error: {exc}")

    def _recover(self) -> None:
        """After a failure, read again from what the store has applied (never skip)."""
        self._stop_flag.wait(1.0)
        with self._lock:
            if self._pending is None:
                self._pending = list(self._target)
