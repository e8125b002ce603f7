"""The audit signer: one replica per partition chains its events and signs.

A thread with its own log reader follows the partitions this node owns, from
just after the last signed checkpoint in the durable store (or the log's
start), extends each partition's chain with every event in the log's order,
and every ``interval`` seconds (or ``max_events`` events) stores a checkpoint
signed with the cluster's audit key. It only reads the log: writes and their
latency never wait for it. See :mod:`agentmem.runtime.audit`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agentmem.eventlog.ports import LogAdmin, LogReader, LogUnavailableError
from agentmem.node.writebehind import StoreHandle
from agentmem.runtime.audit import GENESIS, AuditKey, digest
from agentmem.store.ports import StoreIdentityError, StoreUnavailableError

log = logging.getLogger(__name__)


@dataclass
class _Chain:
    next: int  # the next offset to chain
    head: str  # the head after the last signed event
    first: int  # the first offset of the pending events
    pending: list[bytes] = field(default_factory=list)
    since: float = field(default_factory=time.monotonic)


class AuditSigner(threading.Thread):
    def __init__(
        self,
        store: StoreHandle,
        key: AuditKey,
        make_reader: Callable[[], LogReader],
        admin: LogAdmin,
        owned: Callable[[], frozenset[int]],
        interval: float = 5.0,
        max_events: int = 4096,
    ) -> None:
        super().__init__(name="audit-signer", daemon=True)
        self.store, self.key, self.admin = store, key, admin
        self._make_reader, self._owned = make_reader, owned
        self.interval, self.max_events = interval, max_events
        self._halt = threading.Event()
        self.chains: dict[int, _Chain] = {}
        self.signed = 0  # checkpoints stored
        self.error: str | None = None

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        reader: LogReader | None = None
        assigned: frozenset[int] = frozenset()
        while not self._halt.is_set():
            try:
                if reader is None:
                    reader = self._make_reader()
                owned = self._owned()
                if owned != assigned:
                    self._follow(reader, owned)
                    assigned = owned
                for record in reader.poll(1000, 0.2):
                    self._chain(record.partition, record.offset, digest(record))
                self._sign_due()
                self.error = None
            except (StoreUnavailableError, LogUnavailableError, OSError) as exc:
                self.error = str(exc)
                log.warning("audit signer: %s; trying again", exc)
                assigned = frozenset()  # start again from the last signed checkpoints
                self._halt.wait(2.0)
            except StoreIdentityError as exc:
                self.error = str(exc)
                log.error("audit signer stopped: %s", exc)
                return
        if reader is not None:
            reader.close()

    def _follow(self, reader: LogReader, owned: frozenset[int]) -> None:
        """Chain ``owned`` from just after each one's last signed checkpoint."""
        store = self.store.get()
        starts = {}
        lows = self.admin.watermarks(sorted(owned)) if owned else {}
        self.chains = {}
        for p in sorted(owned):
            last = store.last_checkpoint(p)
            if last is None:
                start, head = lows[p][0], GENESIS
            else:
                start, head = last.last + 1, last.head
            self.chains[p] = _Chain(start, head, start)
            starts[p] = start
        reader.assign(starts)

    def _chain(self, partition: int, offset: int, event_digest: bytes) -> None:
        c = self.chains.get(partition)
        if c is None or offset < c.next:
            return
        if offset > c.next:
            # The log lost events before they were chained (retention outran the
            # signer): sign what came before, and say so; the verifier will too.
            log.error("audit chain of partition %s skips offsets %s..%s: they left the log "
                      "before they were signed", partition, c.next, offset - 1)  # fmt: skip
            self._sign(partition, c)
            c.first = offset
        c.pending.append(event_digest)
        c.next = offset + 1

    def _sign_due(self) -> None:
        now = time.monotonic()
        for p, c in self.chains.items():
            if c.pending and (now - c.since >= self.interval or len(c.pending) >= self.max_events):
                self._sign(p, c)

    def _sign(self, partition: int, c: _Chain) -> None:
        if not c.pending:
            return
        checkpoint = self.key.sign(
            self.store.cluster_uid, partition, c.first, c.head, c.pending, int(time.time() * 1000)
        )
        self.store.get().save_checkpoint(checkpoint)
        self.signed += 1
        c.head, c.first, c.pending, c.since = checkpoint.head, c.next, [], time.monotonic()
