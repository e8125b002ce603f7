"""An agent's changes in the log, each with the outcome it had.

Outcomes are not in the log: they are what the apply rules made of each event.
A page replays the agent's events (only the agent's, in a small state of its
own) from where the previous page stopped: the replay is kept under the
page's cursor (``next_after``), so paging on continues instead of reading the
partition from its start again. A cursor that is no longer kept (or a first
page) replays from the log's start, which agentmem keeps at most an audit
window behind. An event whose condition names a version older than the log's
start is reported with outcome ``unknown``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentmem.eventlog.ports import LogAdmin, LogReader, LogRecord, read_range
from agentmem.node.apply import MemoryState, Outcome, decode
from agentmem.node.watch import change

#: Replays kept for cursors that may be continued.
CURSORS_KEPT = 64
SCAN_BATCH = 500
#: Read-ahead kept with a cursor at most (bytes of payload); beyond, it is read again.
AHEAD_BYTES = 1 << 20


@dataclass
class _Replay:
    state: MemoryState
    first: int  # the first offset of the log this replay started from
    cursor: int = -1  # the last offset it applied
    entries: list[dict[str, Any]] = field(default_factory=list)
    #: Records read past the end of the previous page, not applied yet.
    ahead: list[LogRecord] = field(default_factory=list)


class History:
    def __init__(
        self,
        admin: LogAdmin,
        reader: Callable[[], LogReader],
        window_ms: int,
        scanned: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.admin = admin
        self._scanned = scanned
        self.window_ms = window_ms
        self._make_reader = reader
        self._reader: LogReader | None = None
        self._lock = threading.Lock()
        self._replays: OrderedDict[tuple[str, str, int, int], _Replay] = OrderedDict()

    async def page(
        self,
        tenant: str,
        agent: str,
        partition: int,
        after: int,
        limit: int,
        upto: int | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """The agent's events after offset ``after`` (at most ``limit``, up to offset
        ``upto``), and the offset to continue after."""
        return await asyncio.to_thread(self._page, tenant, agent, partition, after, limit, upto)

    def _page(
        self, tenant: str, agent: str, p: int, after: int, limit: int, upto: int | None
    ) -> tuple[list[dict[str, Any]], int]:
        with self._lock:
            low, high = self.admin.watermarks([p])[p]
            end = high if upto is None else min(high, upto + 1)
            replay = self._replays.pop((tenant, agent, p, after), None)
            if replay is None:
                replay = _Replay(MemoryState(self.window_ms), first=low, cursor=low - 1)
            replay.entries = []
            reader = self._reader or self._make_reader()
            self._reader = reader
            while replay.cursor < end - 1 and len(replay.entries) < limit:
                batch = [r for r in replay.ahead if r.offset < end]
                replay.ahead = []
                if not batch:
                    reader.assign({p: replay.cursor + 1})
                    batch = read_range(reader, p, replay.cursor + 1, end, SCAN_BATCH)
                    if not batch:
                        break
                    self._scanned(len(batch))
                for i, record in enumerate(batch):
                    if len(replay.entries) >= limit:
                        rest = batch[i:]
                        if sum(len(r.payload) for r in rest) <= AHEAD_BYTES:
                            replay.ahead = rest
                        break
                    replay.cursor = record.offset
                    event = decode(record.payload)
                    if event is None or event.tenant != tenant or event.agent != agent:
                        continue
                    code = replay.state.apply_event(p, record.offset, record.timestamp, event)
                    if record.offset <= after or code is None:
                        continue
                    entry = change(event, p, record.offset, record.timestamp)
                    outcome = Outcome.parse(code)
                    if outcome.duplicate:
                        entry["outcome"] = "duplicate"
                    elif (
                        outcome.status == "conflict"
                        and isinstance(event.expect, int)
                        and event.expect < replay.first
                    ):
                        entry["outcome"] = "unknown"
                    else:
                        entry["outcome"] = outcome.status
                    replay.entries.append(entry)
            entries, replay.entries = replay.entries, []
            self._replays[(tenant, agent, p, replay.cursor)] = replay
            while len(self._replays) > CURSORS_KEPT:
                self._replays.popitem(last=False)
            return entries, replay.cursor

    def close(self) -> None:
        with self._lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
