"""The node's core in process, on the embedded adapters (SQLite log, memory state)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agentmem.directory.names import Address
from agentmem.node.adapters.memory_store import MemoryStore
from agentmem.node.adapters.sqlite_log import SqliteReader, SqliteWriter
from agentmem.node.service import Node, NodeConfig


def embedded_node(tmp_path: Path) -> Node:
    path = tmp_path / "log.db"
    return Node(
        NodeConfig(partitions=4),
        SqliteWriter(path, 4),
        SqliteReader(path, 4),
        SqliteReader(path, 4),
        MemoryStore(),
    )


def test_writes_reads_and_conditions(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = embedded_node(tmp_path)
        await node.start()
        try:
            addr = Address("acme", "bot", "k")
            first = await node.append(addr, "put", "1", None, None, "r1", "")
            assert first.outcome.status == "applied"
            _, record = await node.get(addr)
            assert record is not None and record.value == "1"
            stale = await node.append(addr, "put", "2", "absent", None, "r2", "")
            assert stale.outcome.status == "conflict" and stale.current == first.version
            merged = await node.merge(addr, {"a": 1}, None, None, "r3", "")
            assert merged.outcome.status == "applied"
            _, record = await node.get(addr, "strong")
            assert record is not None and record.value == '{"a":1}'
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_a_watcher_that_falls_behind_is_told_where_to_resume(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = embedded_node(tmp_path)
        node.WATCH_QUEUE = 5
        await node.start()
        try:
            stream = node.watch("acme", "bot", None)
            first = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.05)  # the watch is registered
            for i in range(20):
                await node.append(Address("acme", "bot", f"k{i}"), "put", "1", None, None, "", "")
            seen: list[dict[str, Any]] = [await first]
            async for entry in stream:
                seen.append(entry)
            assert seen[-1]["overflow"] is True
            changes = [e for e in seen if "key" in e]
            assert len(changes) < 20
            assert seen[-1]["resume_after"] == changes[-1]["version"]
        finally:
            await node.stop()

    asyncio.run(scenario())
