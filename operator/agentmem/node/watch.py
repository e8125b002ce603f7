"""Watchers of agents' changes: a bounded queue each, fed as events are applied.

A watcher that falls :data:`WATCH_QUEUE` changes behind is not silently
skipped ahead: its stream ends with where to resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from agentmem.eventlog.events import Event
from agentmem.eventlog.ports import LogRecord

#: Changes a watcher may fall behind before its stream ends with "overflow".
WATCH_QUEUE = 10_000

Queue = asyncio.Queue[dict[str, Any]]


def change(event: Event, partition: int, offset: int, timestamp: int) -> dict[str, Any]:
    """One change as the API shows it (history and watch)."""
    return {
        "version": f"{partition}:{offset}",
        "offset": offset,
        "op": event.op,
        "key": event.key,
        "value": None if event.value is None else json.loads(event.value),
        "expires_at": event.expires_at,
        "actor": event.actor,
        "request_id": event.rid,
        "time": timestamp,
    }


class WatchHub:
    def __init__(self, queue_size: int = WATCH_QUEUE) -> None:
        self.queue_size = queue_size
        self._watchers: dict[str, set[Queue]] = {}
        self._overflowed: set[Queue] = set()
        self.closing = False

    def __bool__(self) -> bool:
        return bool(self._watchers)

    def __len__(self) -> int:
        return sum(len(q) for q in self._watchers.values())

    def subscribe(self, agent_path: str) -> Queue:
        queue: Queue = asyncio.Queue(maxsize=self.queue_size)
        self._watchers.setdefault(agent_path, set()).add(queue)
        return queue

    def unsubscribe(self, agent_path: str, queue: Queue) -> None:
        self._overflowed.discard(queue)
        queues = self._watchers.get(agent_path)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._watchers[agent_path]

    def overflowed(self, queue: Queue) -> bool:
        return queue in self._overflowed

    def publish(self, partition: int, record: LogRecord, event: Event) -> None:
        queues = self._watchers.get(f"{event.tenant}/{event.agent}")
        if not queues:
            return
        entry = change(event, partition, record.offset, record.timestamp)
        for queue in list(queues):
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:
                self._overflowed.add(queue)

    def close(self) -> None:
        """End every stream (on shutdown)."""
        self.closing = True
        for queues in self._watchers.values():
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait({})
