"""The memory node: routes each request once, then writes through the log or reads
the state.

Write: check the route and admission, append one event, wait until this node
applied it, answer its outcome. An acknowledged write is in the log (acks=all)
and decided; the durable store reflects it shortly after (write-behind).

Read: wait for a version token (session) or the log's end (strong) when
asked, refuse while the partition is loaded or rebuilt, then answer from the
record cache or the state.

The parts: :mod:`.progress` (offsets and waiters), :mod:`.cache`,
:mod:`.watch`, :mod:`.history`, :mod:`.applier` (the thread that follows the
log, and the sampler), :mod:`.writebehind` (the durable store and truncation).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from agentmem.directory import Directory, partition_for
from agentmem.eventlog.events import Event, Expect
from agentmem.eventlog.ports import LogAdmin, LogReader, LogRecord, LogUnavailableError, LogWriter
from agentmem.node import errors
from agentmem.node.applier import Applier, Sampler, poster
from agentmem.node.apply import Outcome, decode, merge_patch
from agentmem.node.audit import AuditSigner
from agentmem.node.cache import RecordCache
from agentmem.node.history import History
from agentmem.node.metrics import NodeMetrics
from agentmem.node.progress import HighWatermarks, Phase, Progress
from agentmem.node.requests import Consistency, ReadRequest, SearchRequest, WriteRequest
from agentmem.node.semantic import MAX_K, Semantic
from agentmem.node.settings import NodeSettings
from agentmem.node.state.ports import (
    PartitionSample,
    StateResetError,
    StateStore,
    StateUnavailableError,
)
from agentmem.node.tokens import Version
from agentmem.node.watch import WatchHub
from agentmem.node.writebehind import StoreHandle, StoreWriter
from agentmem.runtime import tracing
from agentmem.runtime.audit import AuditKey
from agentmem.runtime.directory import DirectoryFollower
from agentmem.semantic.filters import expression, matches
from agentmem.store.ports import DurableStore, Record

log = logging.getLogger(__name__)

MERGE_ATTEMPTS = 16
HEARTBEAT_SECONDS = 15.0


@dataclass(frozen=True)
class WriteResult:
    outcome: Outcome
    version: Version | None  # the new version, when applied
    current: Version | None  # the key's version, on a conflict


@dataclass(frozen=True)
class View:
    """What the node serves, from the directory (or everything, without one).

    ``releasing``: partitions this shard owned until the current epoch moved them
    away. The node still applies and serves them until their hand-off ends (the
    new owner's clients and routers follow the directory at their own pace), so a
    move leaves no moment without a server; then they are dropped.
    """

    epoch: int = 0
    directory: Directory | None = None
    owned: frozenset[int] = frozenset()
    warming: frozenset[int] = frozenset()
    releasing: frozenset[int] = frozenset()

    @property
    def pending_epoch(self) -> int | None:
        pending = self.directory.pending if self.directory is not None else None
        return pending.epoch if pending is not None else None

    @property
    def consumed(self) -> list[int]:
        return sorted(self.owned | self.warming | self.releasing)


def now_ms() -> int:
    return int(time.time() * 1000)


class Node:
    """One memory node (one replica of one shard)."""

    def __init__(
        self,
        settings: NodeSettings,
        writer: LogWriter,
        reader: Callable[[], LogReader],
        admin: LogAdmin,
        state: StateStore,
        store: DurableStore | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.writer = writer
        self.admin = admin
        self.state = state
        self.metrics = metrics or NodeMetrics(settings.cluster, settings.shard)
        self._make_reader = reader
        self.progress = Progress(settings.wait_timeout)
        self.cache = RecordCache(settings.cache_entries)
        self.watchers = WatchHub()
        self.history_pages = History(
            admin, reader, settings.window_ms, self.metrics.history_scanned.inc
        )
        self.highs = HighWatermarks(admin.high_watermarks, self.metrics.high_watermark_queries.inc)
        self.store = None if store is None else StoreHandle(store, settings.uid, admin.topic_id)
        semantic = settings.semantic_config
        self.semantic = (
            None
            if semantic is None
            else Semantic(
                semantic, settings.partitions, settings.writes_index(semantic), self.metrics
            )
        )
        self.view = View()
        self.follower = (
            DirectoryFollower(settings.directory_file, self._directory_changed)
            if settings.directory_file
            else None
        )
        self.memory: tuple[int, int] = (0, 0)
        self.samples: dict[int, PartitionSample] = {}
        self.failures: dict[str, str] = {}
        self.reset_suspected = False
        self._resets = 0  # resets the applier reported; a read across one proves nothing
        self._applier: Applier | None = None
        self._sampler: Sampler | None = None
        self._store_writer: StoreWriter | None = None
        self._audit_signer: AuditSigner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._last_tick: dict[int, float] = {}
        #: partition -> when its hand-off ends (time.monotonic())
        self._handoff: dict[int, float] = {}

    # Lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        post = poster(loop)
        await asyncio.to_thread(self.state.check)
        count = await asyncio.to_thread(self.admin.partition_count)
        if count != self.settings.partitions:
            raise RuntimeError(
                f"the event log has {count} partitions but this cluster has "
                f"{self.settings.partitions}; a node must not serve a log partitioned differently"
            )
        if self.follower is not None:
            self.follower.load(force=True)
        else:
            self.view = View(owned=frozenset(range(self.settings.partitions)))
        index_writer = None
        if self.semantic is not None:
            index_writer = self.semantic.start(
                self._make_reader, self._lookup_from(loop),
                lambda message: post(self.failed, "index", message), self._applied_offsets,
            )  # fmt: skip
        if self.store is not None:
            floor = self.semantic.index.offsets if self.semantic is not None else None
            self._store_writer = StoreWriter(
                self.store, self.admin, self._make_reader, self.settings.window_ms,
                self.metrics, lambda message: post(self.failed, "store", message),
                lambda: self.view.owned, self.settings.audit_window_seconds * 1000,
                self.settings.truncate_interval, floor,
            )  # fmt: skip
            self._store_writer.start()
            if self.settings.signs_audit:
                assert self.settings.audit_key_file is not None
                with open(self.settings.audit_key_file, "rb") as f:
                    key = AuditKey.from_pem(f.read())
                self._audit_signer = AuditSigner(
                    self.store, key, self._make_reader, self.admin, lambda: self.view.owned,
                    self.settings.audit_interval,
                )  # fmt: skip
                self._audit_signer.start()
        consumed = self.view.consumed
        reader = await asyncio.to_thread(self._make_reader)
        self._applier = Applier(
            self.state, reader, self.admin, self.store, self._store_writer, self, post,
            self.metrics, consumed, index_writer,
        )  # fmt: skip
        self._applier.start()
        self._sampler = Sampler(self._applier, self.admin, self.state, self, post)
        self._sampler.start()
        if self.follower is not None:
            self._tasks.append(asyncio.create_task(self.follower.follow()))
        self._tasks.append(asyncio.create_task(self._tick_forever()))
        self._tasks.append(asyncio.create_task(self._end_handoffs()))

    async def stop(self) -> None:
        self.watchers.close()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for thread in (self._sampler, self._applier, self._store_writer, self._audit_signer):
            if thread is not None:
                thread.stop()
                await asyncio.to_thread(thread.join, 10)
        if self._applier is not None:
            await asyncio.to_thread(self._applier.reader.close)
        await self.writer.close()
        await asyncio.to_thread(self.history_pages.close)
        await asyncio.to_thread(self.admin.close)
        if self.semantic is not None:
            await self.semantic.stop()
        await self.state.aclose()
        if self.store is not None:
            await asyncio.to_thread(self.store.store.close)

    # Directory -------------------------------------------------------------------

    def _directory_changed(self, directory: Directory) -> None:
        if directory.partitions != self.settings.partitions:
            log.error(
                "directory has %s partitions, the node %s; keeping epoch %s",
                directory.partitions, self.settings.partitions, self.view.epoch,
            )  # fmt: skip
            return
        shard = self.settings.shard
        owned = frozenset(directory.partitions_of(shard))
        warming = frozenset(
            m.partition
            for m in (directory.pending.moves if directory.pending else ())
            if m.target == shard
        )
        if self.view.directory is not None and directory.epoch > self.view.epoch:
            ends = time.monotonic() + self.settings.handoff_seconds
            for p in self.view.owned - owned:
                self._handoff.setdefault(p, ends)
        for p in owned:
            self._handoff.pop(p, None)
        self._set_view(View(directory.epoch, directory, owned, warming))

    def _set_view(self, view: View) -> None:
        view = replace(view, releasing=frozenset(self._handoff))
        changed = view.consumed != self.view.consumed
        self.view = view
        if changed and self._applier is not None:
            self._applier.reassign(view.consumed)

    async def _end_handoffs(self) -> None:
        """Drop partitions whose hand-off to their new owner has ended."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            done = [p for p, ends in self._handoff.items() if ends <= now]
            if done:
                for p in done:
                    del self._handoff[p]
                log.info("hand-off of partitions %s ended: dropping them", done)
                self._set_view(self.view)

    def route(self, tenant: str, agent: str, client_epoch: int | None = None) -> int:
        """The partition of an agent, if this node serves it; else a redirect."""
        p = partition_for(tenant, agent, self.settings.partitions)
        view = self.view
        if client_epoch is not None and client_epoch > view.epoch:
            if self.follower is not None:
                self.follower.load()
            view = self.view
            if client_epoch > view.epoch:
                raise errors.StaleNode(
                    f"this node has directory epoch {view.epoch} but the request was routed "
                    f"with epoch {client_epoch}; retry in a moment",
                    retry_after=1,
                    epoch=view.epoch,
                )
        if p in view.owned or p in view.releasing:
            return p
        directory = view.directory
        if directory is None:  # pragma: no cover - without a directory every partition is owned
            raise errors.Unavailable("this node has no directory yet", code="no_directory")
        owner = directory.owner(p)
        raise errors.WrongShard(
            f"partition {p} is served by shard {owner.id} ({owner.endpoint}) at epoch "
            f"{directory.epoch}",
            endpoint=owner.endpoint,
            epoch=directory.epoch,
            partition=p,
            owner={"shard": owner.id, "endpoint": owner.endpoint, "zone": owner.zone},
        )

    # Writes ----------------------------------------------------------------------

    def _admit(self, partition: int, rid: str) -> None:
        used, maximum = self.memory
        if maximum and used >= maximum * self.settings.memory_admission:
            self.metrics.rejected_full.inc()
            raise errors.StateFull(
                f"this shard's state store is {used * 100 // maximum}% full; writes are refused "
                "until it has room: raise spec.cache.memoryLimit or add shards"
            )
        if self.fatal:
            raise errors.Unavailable(self.fatal, retry_after=5)
        if self.progress.get(partition).phase != "serving":
            self.progress.require_readable(partition)
        sample = self.samples.get(partition)
        if rid and sample is not None and sample.request_ids >= self.settings.max_request_ids:
            raise errors.Unavailable(
                f"partition {partition} remembers {sample.request_ids} request ids (the limit "
                f"is {self.settings.max_request_ids} per dedup window); retry in a few "
                "seconds, or lower spec.dedup.windowSeconds",
                code="too_many_request_ids",
                retry_after=5,
            )

    async def write(self, req: WriteRequest) -> WriteResult:
        started = time.perf_counter()
        p = self.route(req.addr.tenant, req.addr.agent, req.epoch)
        self._admit(p, req.rid)
        if req.op == "merge":
            result = await self._merge(p, req)
        else:
            expires_at = now_ms() + req.ttl_ms if req.ttl_ms else None
            result = await self._append(p, req, req.op, req.body, req.expect, expires_at, req.rid)
        self.metrics.write_latency.observe(time.perf_counter() - started)
        return result

    async def _append(
        self,
        p: int,
        req: WriteRequest,
        op: str,
        value: str | None,
        expect: Expect,
        expires_at: int | None,
        rid: str,
    ) -> WriteResult:
        addr = req.addr
        text = vector = None
        if req.embedding is not None and op != "delete":
            if self.semantic is None:
                raise errors.InvalidRequest(
                    "semantic_off",
                    "this cluster has no semantic memory (spec.semantic): write without text, "
                    "vector or embed",
                )
            text, vector = await self.semantic.packed(req.embedding, value)
        event = Event(
            op, addr.tenant, addr.agent, addr.key, value, expect, expires_at, rid,  # type: ignore[arg-type]
            req.actor, now_ms(), text, vector,
        )  # fmt: skip
        with tracing.span("log append", partition=p) as appending:
            try:
                offset = await self.writer.append(p, addr.path.encode(), event.encode())
            except LogUnavailableError as exc:
                raise errors.LogUnavailable(
                    f"{exc}; nothing was acknowledged: retry with the same request id",
                    retry_after=1,
                ) from exc
            tracing.note(appending, version=f"{p}:{offset}")
        with tracing.span("apply", partition=p, version=f"{p}:{offset}") as applying:
            outcome = Outcome.parse(await self.progress.outcome(p, offset))
            tracing.note(applying, outcome=outcome.status)
        if outcome.status == "applied" and outcome.version is not None:
            return WriteResult(outcome, Version(p, outcome.version), None)
        if outcome.status == "conflict":
            current = Version(p, outcome.version) if outcome.version is not None else None
            return WriteResult(outcome, None, current)
        raise errors.Unavailable(  # pragma: no cover - the node never appends such an event
            f"the event at {p}:{offset} could not be applied", code="invalid_event"
        )

    async def _merge(self, p: int, req: WriteRequest) -> WriteResult:
        """JSON merge patch, resolved here into the whole new value.

        The event carries the merged value with compare-and-set on the version it
        was computed from, so concurrent writers are serialized by the log.
        Without a caller's condition, a lost race is retried on fresh state; a
        caller's If-Match is compared with a caught-up state, never a lagging one.
        """
        patch = json.loads(req.body or "null")
        expect = req.expect
        caught_up = False
        for attempt in range(MERGE_ATTEMPTS):
            record = (await self._records(p, [req.addr.path]))[0]
            if (expect == "absent" and record is not None) or (
                isinstance(expect, int) and (record is None or record.version != expect)
            ):
                if not caught_up:
                    await self._strong(p)
                    caught_up = True
                    continue
                current = Version(p, record.version) if record is not None else None
                version = record.version if record is not None else None
                return WriteResult(Outcome("conflict", version), None, current)
            base = json.loads(record.value) if record is not None else None
            merged = json.dumps(merge_patch(base, patch), separators=(",", ":"))
            if req.ttl_ms:
                expires_at: int | None = now_ms() + req.ttl_ms
            else:
                expires_at = record.expires_at if record is not None else None
            condition: Expect = record.version if record is not None else "absent"
            rid = req.rid if attempt == 0 or not req.rid else f"{req.rid}/{attempt}"
            result = await self._append(p, req, "merge", merged, condition, expires_at, rid)
            if result.outcome.status == "applied" or expect is not None:
                return result
            if result.current is not None:
                await self.progress.wait_applied(p, result.current.offset)
        raise errors.Contended(f"the key changed {MERGE_ATTEMPTS} times while merging; retry")

    # Reads -----------------------------------------------------------------------

    async def _strong(self, p: int) -> None:
        try:
            high = await self.highs.get(p)
        except LogUnavailableError as exc:
            raise errors.LogUnavailable(
                f"{exc}; a strong read needs the log's end: retry, or read with "
                "consistency=session",
                retry_after=1,
            ) from exc
        await self.progress.wait_applied(p, high - 1)

    async def _consistent(
        self, p: int, consistency: Consistency, min_version: Version | None
    ) -> None:
        if min_version is not None:
            if min_version.partition != p:
                raise errors.InvalidRequest(
                    "foreign_version",
                    f"min_version {min_version} is of partition {min_version.partition}, but "
                    f"this agent's keys are in partition {p}",
                )
            await self.progress.wait_applied(p, min_version.offset)
        if consistency == "strong":
            await self._strong(p)
        progress = self.progress.partitions.get(p)
        if progress is None or not progress.readable:
            self.metrics.reads_refused.inc()
            self.progress.require_readable(p)

    async def _load(self, paths: Sequence[str]) -> list[Record | None]:
        resets = self._resets
        try:
            return await self.state.get_many(paths)
        except StateResetError:
            if resets == self._resets:  # (else it read the contents before the last reset)
                self._suspect_reset()
            self.metrics.reads_refused.inc()
            raise errors.Rebuilding(
                "this node's state store was emptied and is being rebuilt; retry in a moment "
                "or read from another replica",
                retry_after=1,
            ) from None
        except StateUnavailableError as exc:
            raise errors.Unavailable(f"{exc}; retry in a moment", retry_after=1) from exc

    def _suspect_reset(self) -> None:
        """A read found the state emptied: unready now; the applier rebuilds."""
        self.reset_suspected = True
        self.cache.forget_all()
        if self._applier is not None:
            self._applier.check_state()

    async def _records(self, p: int, paths: Sequence[str]) -> list[Record | None]:
        found, missing = self.cache.lookup(paths)
        if len(missing) < len(paths):
            self.metrics.hits.inc(len(paths) - len(missing))
        if missing:
            self.metrics.misses.inc(len(missing))
            found = await self.cache.fill(paths, found, missing, self._load)
        now = now_ms()
        return [r if r is not None and r.live(now) else None for r in found]

    async def read(self, req: ReadRequest) -> tuple[int, list[Record | None]]:
        started = time.perf_counter()
        p = self.route(req.tenant, req.agent, req.epoch)
        await self._consistent(p, req.consistency, req.min_version)
        paths = [f"{req.agent_path}/{k}" for k in req.keys or ()]
        records = await self._records(p, paths)
        self.metrics.read_latency.observe(time.perf_counter() - started)
        return p, records

    async def keys(self, req: ReadRequest) -> tuple[int, list[str]]:
        p = self.route(req.tenant, req.agent, req.epoch)
        await self._consistent(p, req.consistency, req.min_version)
        resets = self._resets
        try:
            keys = await self.state.keys(req.agent_path)
        except StateResetError:
            if resets == self._resets:
                self._suspect_reset()
            raise errors.Rebuilding(
                "this node's state store is being rebuilt; retry in a moment", retry_after=1
            ) from None
        if not keys:
            return p, []
        records = await self._records(p, [f"{req.agent_path}/{k}" for k in keys])
        return p, [k for k, r in zip(keys, records, strict=True) if r is not None]

    async def agents(
        self, tenant: str, client_epoch: int | None = None
    ) -> tuple[dict[int, int], list[str]]:
        """The tenant's agents with keys in the partitions this node owns and can read.

        Returns the partitions answered for, with the applied offset each answer
        reflects, and the agents; a client that asks every shard unites them and
        knows from the partitions whether the answer covers the whole ring.
        """
        view = self.view
        if client_epoch is not None and client_epoch > view.epoch:
            self.route(tenant, tenant, client_epoch)  # 421 unless the directory moved on
            view = self.view
        readable = [
            p
            for p in sorted(view.owned)
            if (progress := self.progress.partitions.get(p)) is not None and progress.readable
        ]
        applied = {p: self.progress.applied_offset(p) for p in readable}
        resets = self._resets
        try:
            agents = await self.state.agents(tenant, readable)
        except StateResetError:
            if resets == self._resets:
                self._suspect_reset()
            raise errors.Rebuilding(
                "this node's state store is being rebuilt; retry in a moment", retry_after=1
            ) from None
        except StateUnavailableError as exc:
            raise errors.Unavailable(f"{exc}; retry in a moment", retry_after=1) from exc
        return applied, agents

    # Search ------------------------------------------------------------------------

    def _lookup_from(
        self, loop: asyncio.AbstractEventLoop
    ) -> Callable[[Sequence[str]], list[Record | None]]:
        """The state's current records, for the index writer's thread."""

        def lookup(paths: Sequence[str]) -> list[Record | None]:
            found = asyncio.run_coroutine_threadsafe(self.state.get_many(paths), loop).result(60)
            now = now_ms()
            return [r if r is not None and r.live(now) else None for r in found]

        return lookup

    def _applied_offsets(self) -> dict[int, int]:
        """What the state reflects of each partition this node applies and can read."""
        out = {}
        for p in self.view.consumed:
            progress = self.progress.partitions.get(p)
            if progress is not None and progress.readable:
                out[p] = self.progress.applied_offset(p)
        return out

    def _search_partitions(self, req: SearchRequest) -> list[int]:
        scope = req.scope
        if scope.agent is not None:
            return [self.route(scope.tenant, scope.agent, req.epoch)]
        view = self.view
        if req.epoch is not None and req.epoch > view.epoch:
            self.route(scope.tenant, scope.tenant, req.epoch)  # 421 unless the directory moved on
            view = self.view
        served = sorted(view.owned)
        if req.partitions is not None:
            served = [p for p in served if p in req.partitions]
        return served

    async def search(self, req: SearchRequest) -> tuple[dict[int, int], list[tuple[Any, Record]]]:
        """The best matches among the partitions this node serves.

        Returns the partitions answered for (with the applied offset each
        reflects) and up to ``k`` (hit, current record) pairs, best first.
        """
        semantic = self.semantic
        if semantic is None:
            raise errors.NotFound(
                "this cluster has no semantic memory (spec.semantic)", code="semantic_off"
            )
        started = time.perf_counter()
        partitions = self._search_partitions(req)
        needed: dict[int, int] = {}
        for p in partitions:
            offset = req.min_versions.get(p)
            if offset is not None:
                await self.progress.wait_applied(p, offset)
                needed[p] = offset
            if req.consistency == "strong":
                await self._strong(p)
                needed[p] = max(needed.get(p, -1), self.progress.applied_offset(p))
            progress = self.progress.partitions.get(p)
            if progress is None or not progress.readable:
                self.progress.require_readable(p)
        if needed:
            await semantic.offsets.wait(needed, self.settings.wait_timeout)
        applied = {p: self.progress.applied_offset(p) for p in partitions}
        if not partitions:
            return applied, []
        vector = await semantic.query_vector(req.text, req.vector)
        expr = expression(req.scope, partitions, req.conditions, now_ms())
        limit = min(req.k * 2 + 10, MAX_K * 4)
        found: list[tuple[Any, Record]] = []
        for _ in range(3):
            hits = await semantic.candidates(vector, limit, expr, partitions)
            records = await self._load([h.path for h in hits]) if hits else []
            now = now_ms()
            found, seen = [], set()
            for hit, record in zip(hits, records, strict=True):
                if (
                    record is None
                    or record.version != hit.version
                    or not record.live(now)
                    or hit.path in seen
                    or not req.scope.covers(hit.agent, hit.key)
                    or (req.conditions and not matches(json.loads(record.value), req.conditions))
                ):
                    continue  # an older version, deleted or expired since, or outside the scope
                seen.add(hit.path)
                found.append((hit, record))
            if len(found) >= req.k or len(hits) < limit or limit >= MAX_K * 4:
                break
            limit = min(limit * 4, MAX_K * 4)
        self.metrics.searches.inc()
        self.metrics.search_latency.observe(time.perf_counter() - started)
        return applied, found[: req.k]

    # History and watch -----------------------------------------------------------

    async def history(
        self, tenant: str, agent: str, after: int, limit: int, client_epoch: int | None = None
    ) -> tuple[int, list[dict[str, Any]], int]:
        """(partition, the agent's events after offset ``after`` with outcomes, cursor)."""
        p = self.route(tenant, agent, client_epoch)
        try:
            entries, cursor = await self.history_pages.page(tenant, agent, p, after, limit)
        except LogUnavailableError as exc:
            raise errors.LogUnavailable(f"{exc}; retry in a moment", retry_after=1) from exc
        return p, entries, cursor

    def watch(
        self, tenant: str, agent: str, after: int | None, client_epoch: int | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Changes of an agent's keys as they are applied; from ``after`` when given.

        Routes at once (a redirect is raised here, before any streaming). Yields an
        empty dict as a heartbeat when nothing changed for a while, and ends with
        ``{"overflow": True, "resume_after": version}`` when the watcher fell more
        than the queue's length behind (it resumes with ``after``).
        """
        return self._watch(self.route(tenant, agent, client_epoch), tenant, agent, after)

    async def _watch(
        self, p: int, tenant: str, agent: str, after: int | None
    ) -> AsyncIterator[dict[str, Any]]:
        agent_path = f"{tenant}/{agent}"
        queue = self.watchers.subscribe(agent_path)
        try:
            upto = self.progress.applied_offset(p)
            last = after if after is not None else upto
            while after is not None and last < upto:
                try:
                    batch, cursor = await self.history_pages.page(tenant, agent, p, last, 500, upto)
                except LogUnavailableError as exc:
                    raise errors.LogUnavailable(f"{exc}; retry", retry_after=1) from exc
                for entry in batch:
                    if entry.pop("outcome") == "applied":
                        yield entry
                if cursor <= last:
                    break
                last = cursor
            while not self.watchers.closing:
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
                if self.watchers.overflowed(queue) and queue.empty():
                    # The watcher fell too far behind: say where to resume, then end.
                    yield {"overflow": True, "resume_after": f"{p}:{last}"}
                    return
        finally:
            self.watchers.unsubscribe(agent_path, queue)

    # Ticks -----------------------------------------------------------------------

    async def _tick_forever(self) -> None:
        """Move log time on for idle partitions that hold expired keys or request ids."""
        while True:
            await asyncio.sleep(self.settings.tick_interval)
            try:
                await self._tick()
            except Exception as exc:
                log.debug("tick failed: %s", exc)

    async def _tick(self) -> None:
        now = now_ms()
        mono = time.monotonic()
        window = self.settings.window_ms
        for p in sorted(self.view.owned):
            sample = self.samples.get(p)
            if sample is None or self.progress.get(p).phase != "serving":
                continue
            due = (sample.next_expiry is not None and sample.next_expiry <= now) or (
                sample.oldest_request_id is not None and sample.oldest_request_id <= now - window
            )
            if not due or mono - self._last_tick.get(p, 0.0) < self.settings.tick_interval:
                continue
            self._last_tick[p] = mono
            await self.writer.append(p, b"", Event.tick(now, self.settings.node_name).encode())
            self.metrics.ticks.inc()

    # What the applier and sampler report (event loop) ----------------------------

    def assigned(self, starts: dict[int, int], dropped: list[int]) -> None:
        self.progress.assigned(starts, dropped)
        if dropped:
            self.cache.forget_all()

    def applied(
        self, partition: int, records: Sequence[LogRecord], codes: Sequence[str | None]
    ) -> None:
        self.progress.applied(partition, [r.offset for r in records], codes)
        watched = bool(self.watchers)
        for record, code in zip(records, codes, strict=True):
            if code is None or not code.startswith("a"):
                continue
            self.cache.forget(record.key.decode())
            if watched:
                event = decode(record.payload)
                if event is not None:
                    self.watchers.publish(partition, record, event)

    def phase(self, partition: int, phase: Phase, reason: str) -> None:
        self.progress.phase(partition, phase, reason)
        if phase == "loading":
            self.cache.forget_all()

    def reset(self, partitions: list[int]) -> None:
        self._resets += 1
        self.progress.reset(partitions)
        self.cache.forget_all()
        self.state.serve_current()
        self.reset_suspected = False

    def failed(self, source: str, message: str | None) -> None:
        if message is None:
            self.failures.pop(source, None)
        else:
            self.failures[source] = message

    def watermarks(self, marks: dict[int, tuple[int, int]]) -> None:
        self.progress.watermarks(marks)
        now = time.monotonic()
        lags = {p: self.progress.get(p).lag(now) for p in self.view.owned}
        self.metrics.event_lag_messages.set(sum(m for m, _ in lags.values()))
        self.metrics.event_lag_seconds.set(max((s for _, s in lags.values()), default=0.0))
        self.metrics.partition_lag(lags)
        self.metrics.waiters.set(self.progress.waiting())

    def sampled(self, samples: dict[int, PartitionSample], memory: tuple[int, int]) -> None:
        self.samples = samples
        self.memory = memory
        self.metrics.redis_used.set(memory[0])
        self.metrics.redis_max.set(memory[1])

    # Health ----------------------------------------------------------------------

    @property
    def fatal(self) -> str | None:
        """Why this node cannot take writes now, if it cannot."""
        for source in ("applier", "sampler"):
            if source in self.failures:
                return self.failures[source]
        return None

    def alive(self) -> bool:
        return self._applier is not None and self._applier.is_alive()

    def readiness(self) -> tuple[str, str] | None:
        """None when ready; else (code, why)."""
        if self.fatal:
            return "unavailable", self.fatal
        if self.reset_suspected:
            return "rebuilding", "the state store was emptied; it is being rebuilt from the log"
        if self.store is not None and self.store.refused:
            return "store_refused", self.store.refused
        behind = sorted(p for p in self.view.owned if not self.progress.get(p).caught_up)
        if behind:
            reasons = sorted({r for p in behind if (r := self.progress.get(p).reason)})
            return "catching_up", (
                f"partitions {behind} are not caught up with the log yet"
                + (": " + "; ".join(reasons) if reasons else "")
            )
        return None

    def status(self) -> dict[str, Any]:
        partitions = self.view.consumed
        stored = self._store_writer.stored if self._store_writer is not None else {}
        now = time.monotonic()
        out: dict[str, Any] = {}
        for p in partitions:
            progress = self.progress.get(p)
            behind, age = progress.lag(now)
            out[str(p)] = {
                "owned": p in self.view.owned,
                "warming": p in self.view.warming,
                "releasing": p in self.view.releasing,
                "phase": progress.phase,
                "reason": progress.reason,
                "caught_up": progress.caught_up,
                "applied": progress.applied,
                "low": progress.low,
                "high": progress.high,
                "lag_messages": behind,
                "lag_seconds": round(age, 3),
                "stored": stored[p].offset if p in stored else None,
            }
        not_ready = self.readiness()
        return {
            "node": self.settings.node_name,
            "shard": self.settings.shard,
            "epoch": self.view.epoch,
            "pending_epoch": self.view.pending_epoch,
            "ready": not_ready is None,
            "reason": not_ready[1] if not_ready else "",
            "durability": "store" if self.store is not None else "log",
            "durability_message": (
                "facts are written behind to the durable store; the log is truncated behind it"
                if self.store is not None
                else "no durable store: the event log is the state and is never truncated"
            ),
            "store_error": self.failures.get("store"),
            "truncate_error": (
                self._store_writer.truncate_error if self._store_writer is not None else None
            ),
            "audit": self._audit_status(),
            "semantic": (
                self.semantic.status(sorted(self.view.owned)) if self.semantic is not None else None
            ),
            "partitions": out,
        }

    def _audit_status(self) -> dict[str, Any]:
        signer = self._audit_signer
        if signer is None:
            return {"signer": False}
        return {"signer": True, "signed": signer.signed, "error": signer.error}
