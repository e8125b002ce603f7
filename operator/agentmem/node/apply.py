"""The deterministic apply function, and the in-process state it runs on.

Every replica of a shard applies the events of its partitions in log order with
these rules, so replicas that consumed the same log hold the same state:

1. An event at or below the partition's applied offset is skipped (replays are
   harmless). Otherwise the applied offset becomes the event's offset, in the
   same atomic step as the event's effect.
2. Time is the event's log timestamp (the broker's append time), never the
   applier's clock. A record whose ``expires_at`` is at or before it is absent.
3. A request id already seen for the tenant in the same partition within
   :data:`DEDUP_WINDOW_MS` (by log time) makes the event a duplicate: no effect,
   and the outcome is the first event's outcome. (Per partition, so each
   partition's log alone decides, whatever order replicas apply partitions in.)
4. ``expect`` decides: ``None`` always applies, ``"absent"`` applies only when
   the key is absent, an offset applies only when it is the key's version.
   Otherwise the outcome is a conflict naming the current version.
5. put and merge store the event's value with version = the event's offset;
   delete removes the key.
6. After a batch, records whose expiry is at or before the log time of the
   batch's last event are removed (at most :data:`SWEEP_LIMIT` a batch, oldest
   first). They are already absent by rule 2, so this only frees memory, and it
   runs by log time: a replay removes nothing a later event still sees.

Outcome codes (shared with the Redis Lua script, which implements the same
rules inside Redis): ``a:<version>`` applied, ``c:<version>`` or ``c:-``
conflict, ``d`` + a code for a duplicate, ``x`` for an undecodable event.

This module is the reference; the Redis adapter's Lua script is checked
against it by a differential test on real Redis.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from agentmem.node.events import Event, EventDecodeError

DEDUP_WINDOW_MS: Final = 24 * 3600 * 1000
#: Request-id records are kept this much longer than the dedup window.
GRACE_MS: Final = 10 * 60 * 1000
#: Expired records removed at most per batch.
SWEEP_LIMIT: Final = 256


@dataclass(frozen=True)
class Outcome:
    """What an applied event did."""

    status: str  # "applied" | "conflict" | "invalid"
    version: int | None
    duplicate: bool = False

    @classmethod
    def parse(cls, code: str) -> Outcome:
        duplicate = code.startswith("d")
        body = code[1:] if duplicate else code
        if body == "x":
            return cls("invalid", None, duplicate)
        kind, _, version = body.partition(":")
        status = "applied" if kind == "a" else "conflict"
        return cls(status, None if version in ("", "-") else int(version), duplicate)


@dataclass
class Record:
    """A stored value."""

    value: str
    version: int
    expires_at: int | None
    updated: int

    def live(self, now_ms: int) -> bool:
        return self.expires_at is None or self.expires_at > now_ms


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


@dataclass
class MemoryState:
    """Materialized state in process memory: the embedded state store's data.

    Also the reference the Redis Lua script is tested against.
    """

    applied: dict[int, int] = field(default_factory=dict)
    records: dict[str, Record] = field(default_factory=dict)
    index: dict[str, set[str]] = field(default_factory=dict)
    agents: dict[int, set[str]] = field(default_factory=dict)
    expiring: dict[int, dict[str, int]] = field(default_factory=dict)
    log_time: dict[int, int] = field(default_factory=dict)
    rids: dict[tuple[int, str, str], tuple[str, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def apply(self, partition: int, offset: int, timestamp: int, payload: bytes) -> str | None:
        """Apply one event; None when it was applied before."""
        if offset <= self.applied.get(partition, -1):
            return None
        self.applied[partition] = offset
        self.log_time[partition] = timestamp
        try:
            event = Event.decode(payload)
        except EventDecodeError:
            return "x"
        rid_key = (partition, event.tenant, event.rid)
        if event.rid:
            seen = self.rids.get(rid_key)
            if seen is not None and timestamp - seen[1] < DEDUP_WINDOW_MS:
                return "d" + seen[0]
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
            agent_path = f"{event.tenant}/{event.agent}"
            expiring = self.expiring.setdefault(partition, {})
            if event.op == "delete":
                self._remove(partition, path)
            else:
                self.records[path] = Record(
                    value=event.value if event.value is not None else "null",
                    version=offset,
                    expires_at=event.expires_at,
                    updated=timestamp,
                )
                self.index.setdefault(agent_path, set()).add(event.key)
                self.agents.setdefault(partition, set()).add(agent_path)
                if event.expires_at is None:
                    expiring.pop(path, None)
                else:
                    expiring[path] = event.expires_at
            code = f"a:{offset}"
        if event.rid:
            self.rids[rid_key] = (code, timestamp)
        return code

    def _remove(self, partition: int, path: str) -> None:
        self.records.pop(path, None)
        agent_path, _, key = _split(path)
        keys = self.index.get(agent_path)
        if keys is not None:
            keys.discard(key)
        self.expiring.get(partition, {}).pop(path, None)

    def sweep(self, partition: int) -> None:
        """Rule 6: drop records expired by the partition's log time."""
        now = self.log_time.get(partition)
        expiring = self.expiring.get(partition)
        if now is None or not expiring:
            return
        due = sorted((exp, path) for path, exp in expiring.items() if exp <= now)
        for _, path in due[:SWEEP_LIMIT]:
            self._remove(partition, path)

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
            for table in (self.applied, self.expiring, self.log_time):
                table.pop(partition, None)

    def snapshot(self) -> dict[str, Any]:
        """The logical state (records live at each partition's log time), for comparisons."""
        with self.lock:
            horizon = max(self.log_time.values(), default=0)
            records = {
                p: (r.value, r.version, r.expires_at)
                for p, r in sorted(self.records.items())
                if r.live(horizon)
            }
            return {"applied": dict(self.applied), "records": records}


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
