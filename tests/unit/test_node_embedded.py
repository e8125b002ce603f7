"""The node's core in process, on the embedded adapters (SQLite log and store,
memory state)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from agentmem.directory.names import Address
from agentmem.node import errors
from agentmem.node.main import build
from agentmem.node.node import Node
from agentmem.node.requests import ReadRequest, WriteRequest
from agentmem.node.settings import NodeSettings


def embedded_node(tmp_path: Path, store: bool = True, **overrides: Any) -> Node:
    settings = NodeSettings(
        partitions=4,
        log=f"sqlite:{tmp_path / 'log.db'}",
        state="memory",
        store=f"sqlite:{tmp_path / 'store.db'}" if store else "",
        **overrides,
    )
    return build(settings)


def put(key: str, value: Any, **kwargs: Any) -> WriteRequest:
    return WriteRequest(Address("acme", "bot", key), "put", json.dumps(value), **kwargs)


def read(*keys: str, **kwargs: Any) -> ReadRequest:
    return ReadRequest("acme", "bot", keys, **kwargs)


async def ready(node: Node, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.02)):
        if node.readiness() is None:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not ready: {node.readiness()}")


def test_writes_reads_and_conditions(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = embedded_node(tmp_path)
        await node.start()
        try:
            await ready(node)
            first = await node.write(put("k", 1, rid="r1"))
            assert first.outcome.status == "applied"
            _, (record,) = await node.read(read("k"))
            assert record is not None and record.value == "1"
            stale = await node.write(put("k", 2, expect="absent"))
            assert stale.outcome.status == "conflict" and stale.current == first.version
            merged = await node.write(
                WriteRequest(Address("acme", "bot", "k"), "merge", json.dumps({"a": 1}))
            )
            assert merged.outcome.status == "applied"
            _, (record,) = await node.read(read("k", consistency="strong"))
            assert record is not None and record.value == '{"a":1}'
        finally:
            await node.stop()

    asyncio.run(scenario())


def test_a_watcher_that_falls_behind_is_told_where_to_resume(tmp_path: Path) -> None:
    async def scenario() -> None:
        node = embedded_node(tmp_path)
        node.watchers.queue_size = 5
        await node.start()
        try:
            await ready(node)
            stream = node.watch("acme", "bot", None)
            first = asyncio.ensure_future(anext(stream))
            await asyncio.sleep(0.05)  # the watch is registered
            for i in range(20):
                await node.write(put(f"k{i}", 1))
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


@pytest.mark.parametrize("store", [True, False], ids=["with-store", "log-only"])
def test_the_embedded_mode_survives_a_restart_with_every_acknowledged_write(
    tmp_path: Path, store: bool
) -> None:
    acknowledged: dict[str, Any] = {}

    async def write_some() -> None:
        node = embedded_node(tmp_path, store=store)
        await node.start()
        await ready(node)
        for i in range(60):
            key = f"k{i % 17}"
            if i % 5 == 0:
                result = await node.write(
                    WriteRequest(Address("acme", "bot", key), "merge", json.dumps({"i": i}))
                )
            else:
                result = await node.write(put(key, {"i": i}, rid=f"r{i}"))
            assert result.outcome.status == "applied"
            acknowledged[key] = {"i": i}
        gone = await node.write(WriteRequest(Address("acme", "bot", "k3"), "delete", None))
        assert gone.outcome.status == "applied"
        acknowledged.pop("k3")
        await node.stop()  # the process's memory (the state) is gone with it

    async def read_back() -> None:
        node = embedded_node(tmp_path, store=store)
        await node.start()
        try:
            await ready(node)
            keys = sorted(acknowledged)
            _, records = await node.read(read(*keys, consistency="strong"))
            got = {k: json.loads(r.value) for k, r in zip(keys, records, strict=True) if r}
            assert got == acknowledged
            _, (gone,) = await node.read(read("k3"))
            assert gone is None
            # a retried request id is still recognised after the restart
            again = await node.write(put("k1", "late retry", rid="r1"))
            assert again.outcome.duplicate
            status = node.status()
            assert status["durability"] == ("store" if store else "log")
        finally:
            await node.stop()

    asyncio.run(write_some())
    asyncio.run(read_back())


def test_reads_of_a_partition_that_cannot_start_are_refused_not_answered_empty(
    tmp_path: Path,
) -> None:
    """A state that must load from the store while the store is unreachable: 503."""

    async def scenario() -> None:
        node = embedded_node(tmp_path)
        await node.start()
        await ready(node)
        await node.write(put("k", 1))
        await node.stop()
        # The store file is gone, and the log truncated: nothing to start from.
        (tmp_path / "store.db").unlink()
        node = embedded_node(tmp_path, store=False)
        await asyncio.to_thread(node.admin.truncate, 0, 10)
        for p in range(4):
            await asyncio.to_thread(node.admin.truncate, p, 10)
        await node.start()
        try:
            await asyncio.sleep(0.5)
            assert node.readiness() is not None
            with pytest.raises(errors.Rebuilding, match=r"events 0\.\.0 are gone"):
                await node.read(read("k"))
        finally:
            await node.stop()

    asyncio.run(scenario())
