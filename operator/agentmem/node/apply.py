"""The deterministic apply function, and the in-process state it runs on.

Every replica of a shard applies the events of its partitions in log order with
these rules, so replicas that consumed the same log hold the same state, and
the durable store, which applies the same rules onto its own rows, holds it too:

1. An event at or below the partition's applied offset is skipped (replays are
   harmless). Otherwise the applied offset becomes the event's offset, in the
   same atomic step as the event's effect.
2. Time is the event's log timestamp (the broker's append time), never the
   applier's clock. A record whose ``expires_at`` is at or before it is absent.
3. A request id already seen for the tenant in the same partition within the
   dedup window (by log time) makes the event a duplicate: no effect, and the
   outcome is the first event's outcome. (Per partition, so each partition's
   log alone decides, whatever order replicas apply partitions in.)
4. ``expect`` decides: ``None`` always applies, ``"absent"`` applies only when
   the key is absent, an offset applies only when it is the key's version.
   Otherwise the outcome is a conflict naming the current version.
5. put and merge store the event's value with version = the event's offset;
   delete removes the key; tick changes no key (it only moves log time on).
6. After a batch, records whose expiry is at or before the log time of the
   batch's last event, and request ids older than the window, are removed.
   Both are already absent by rules 2 and 3, so this only frees memory; it
   runs by log time, and how much of it one batch does does not change what
   any later event sees.

Outcome codes (shared with the Redis Lua script, which implements the same
rules inside Redis): ``a:<version>`` applied, ``c:<version>`` or ``c:-``
conflict, ``d`` + a code for a duplicate, ``t`` a tick, ``x`` an undecodable
event.

This module is the reference; the Redis adapter's Lua script is checked
against it by a differential test on real Redis.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from agentmem.eventlog.events import Event, EventDecodeError
from agentmem.store.ports import Record, RequestRecord, Snapshot

#: How long a client-supplied request id is remembered, by log time (the
#: default of spec.dedup.windowSeconds).
DEFAULT_DEDUP_WINDOW_MS: Final = 10 * 60 * 1000
#: Expired records removed at most per batch (bounds the work of one Redis call).
SWEEP_LIMIT: Final = 256
#: Request ids out of the window removed at most per batch.
TRIM_LIMIT: Final = 1000


@dataclass(frozen=True)
class Outcome:
    """What an applied event did."""

    status: str  # "applied" | "conflict" | "tick" | "invalid"
    version: int | None
    duplicate: bool = False

    @classmethod
    def parse(cls, code: str) -> Outcome:
        duplicate = code.startswith("d")
        body = code[1:] if duplicate else code
        if body == "x":
            return cls("invalid", None, duplicate)
        if body == "t":
            return cls("tick", None, duplicate)
        kind, _, version = body.partition(":")
        status = "applied" if kind == "a" else "conflict"
        return cls(status, None if version in ("", "-") else int(version), duplicate)


def merge_patch(target: Any, patch: Any) -> Any:
    """JSON Merge Patch (RFC 7396)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = merge_patch(result.get(name), value)
    return result


def decode(payload: bytes) -> Event | None:
    try:
        return Event.decode(payload)
    except EventDecodeError:
        return None


@dataclass
class MemoryState:
    """Materialized state in process memory: the embedded state store's data.

    Also the reference the Redis Lua script is tested against, and what the
    durable store's writer runs on the rows a batch touches.
    """

    window_ms: int = DEFAULT_DEDUP_WINDOW_MS
    applied: dict[int, int] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    index: dict[str, set[str]] = field(default_factory=dict)
    agents: dict[int, set[str]] = field(default_factory=dict)
    expiring: dict[int, dict[str, int]] = field(default_factory=dict)
    log_time: dict[int, int] = field(default_factory=dict)
    rids: dict[int, dict[str, RequestRecord]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def apply(self, partition: int, offset: int, timestamp: int, payload: bytes) -> str | None:
        """Apply one event; None when it was applied before."""
        return self.apply_event(partition, offset, timestamp, decode(payload))

    def apply_event(
        self, partition: int, offset: int, timestamp: int, event: Event | None
    ) -> str | None:
        """Apply one decoded event (None: it could not be decoded)."""
        if offset <= self.applied.get(partition, -1):
            return None
        self.applied[partition] = offset
        self.log_time[partition] = timestamp
        if event is None:
            return "x"
        if event.op == "tick":
            return "t"
        rids = self.rids.setdefault(partition, {})
        rid_key = event.rid_key
        if event.rid:
            seen = rids.get(rid_key)
            if seen is not None and timestamp - seen.log_time < self.window_ms:
                return "d" + seen.code
        path = event.path
        record = self.records.get(path)
        current = record if record is not None and record.live(timestamp) else None
        if event.expect is None:
            ok = True
        elif event.expect == "absent":
            ok = current is None
        else:
            ok = current is not None and current.version == event.expect
        if not ok:
            code = f"c:{current.version}" if current is not None else "c:-"
        else:
            if event.op == "delete":
                self._remove(partition, path)
            else:
                self._store(
                    partition,
                    path,
                    Record(
                        value=event.value if event.value is not None else "null",
                        version=offset,
                        expires_at=event.expires_at,
                        updated=timestamp,
                    ),
                )
            code = f"a:{offset}"
        if event.rid:
            rids[rid_key] = RequestRecord(code, timestamp)
        return code

    def _store(self, partition: int, path: str, record: Record) -> None:
        self.records[path] = record
        agent_path, _, key = _split(path)
        self.index.setdefault(agent_path, set()).add(key)
        self.agents.setdefault(partition, set()).add(agent_path)
        expiring = self.expiring.setdefault(partition, {})
        if record.expires_at is None:
            expiring.pop(path, None)
        else:
            expiring[path] = record.expires_at

    def _remove(self, partition: int, path: str) -> None:
        self.records.pop(path, None)
        agent_path, _, key = _split(path)
        keys = self.index.get(agent_path)
        if keys is not None:
            keys.discard(key)
        self.expiring.get(partition, {}).pop(path, None)

    def sweep(self, partition: int) -> None:
        """Rule 6: drop records expired and request ids forgotten by the log time."""
        now = self.log_time.get(partition)
        if now is None:
            return
        expiring = self.expiring.get(partition)
        if expiring:
            due = sorted((exp, path) for path, exp in expiring.items() if exp <= now)
            for _, path in due[:SWEEP_LIMIT]:
                self._remove(partition, path)
        rids = self.rids.get(partition)
        if rids:
            for key in [k for k, r in rids.items() if r.log_time <= now - self.window_ms]:
                del rids[key]

    def apply_batch(
        self, partition: int, batch: Iterable[tuple[int, int, bytes]]
    ) -> list[str | None]:
        with self.lock:
            codes = [self.apply(partition, o, t, p) for o, t, p in batch]
            self.sweep(partition)
            return codes

    def drop_partition(self, partition: int) -> None:
        """Forget a partition that moved to another shard."""
        with self.lock:
            for agent_path in self.agents.pop(partition, set()):
                for key in self.index.pop(agent_path, set()):
                    self.records.pop(f"{agent_path}/{key}", None)
            for table in (self.applied, self.expiring, self.log_time, self.rids):
                table.pop(partition, None)

    def load(self, snapshot: Snapshot) -> None:
        """Take a partition's facts from the durable store (after dropping it)."""
        p = snapshot.partition
        self.drop_partition(p)
        with self.lock:
            for path, record in snapshot.records.items():
                self._store(p, path, record)
            self.rids[p] = dict(snapshot.request_ids)
            if snapshot.stored.offset >= 0:
                self.applied[p] = snapshot.stored.offset
                self.log_time[p] = snapshot.stored.log_time

    def snapshot(self) -> dict[str, Any]:
        """The logical state, for comparisons: records live at each partition's log time,
        request ids within the window, applied offsets."""
        with self.lock:
            records = {}
            for p, agents in self.agents.items():
                now = self.log_time.get(p, 0)
                for agent_path in agents:
                    for key in self.index.get(agent_path, ()):
                        path = f"{agent_path}/{key}"
                        r = self.records.get(path)
                        if r is not None and r.live(now):
                            records[path] = (r.value, r.version, r.expires_at)
            rids = {
                f"{p}:{k}": r.code
                for p, table in self.rids.items()
                for k, r in table.items()
                if self.log_time.get(p, 0) - r.log_time < self.window_ms
            }
            return {
                "applied": dict(sorted(self.applied.items())),
                "records": dict(sorted(records.items())),
                "request_ids": dict(sorted(rids.items())),
            }


def _split(path: str) -> tuple[str, str, str]:
    """``tenant/agent/key`` -> (``tenant/agent``, "/", key); keys may contain "/"."""
    tenant, agent, key = path.split("/", 2)
    return f"{tenant}/{agent}", "/", key


def is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
