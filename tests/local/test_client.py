"""The SDK against a local cluster: three real node processes and a router.

Redirects, a directory change mid-run, retries across a node kill, session
tokens across shards, watch resuming, and 1,000 concurrent increments.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from agentmem.client import (
    AsyncMemory,
    ConflictError,
    InvalidRequestError,
    Memory,
    UnavailableError,
)
from agentmem.directory import Directory, partition_for
from agentmem.local import LocalCluster
from tests.local.conftest import start_cluster
from tests.net import free_port_run


def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def agents_on_different_shards(cluster: LocalCluster, name: str, n: int = 2) -> list[str]:
    directory = Directory.from_json((cluster.data / "directory.json").read_text())
    found: dict[int, str] = {}
    i = 0
    while len(found) < n:
        agent = f"bot-{i}"
        shard = directory.owner(partition_for(name, agent, directory.partitions)).id
        found.setdefault(shard, agent)
        i += 1
    return list(found.values())


def test_keys_values_conditions_and_typed_errors(up: LocalCluster) -> None:
    async def scenario() -> None:
        async with AsyncMemory(up.router_url, tenant=tenant()) as mem:
            assert mem.directory is not None and len(mem.directory.shards) == 3
            assert await mem.get("bot-1", "plan") is None
            first = await mem.put("bot-1", "plan", {"goal": "explore", "steps": 3})
            item = await mem.get("bot-1", "plan")
            assert item is not None and item.value == {"goal": "explore", "steps": 3}
            assert item.version == first.version
            await mem.patch("bot-1", "plan", {"steps": None, "done": False})
            item = await mem.get("bot-1", "plan")
            assert item is not None and item.value == {"goal": "explore", "done": False}
            with pytest.raises(ConflictError) as conflict:
                await mem.put("bot-1", "plan", {}, if_version=first.version)
            assert conflict.value.current_version == item.version
            with pytest.raises(ConflictError):
                await mem.put("bot-1", "plan", {}, if_absent=True)
            await mem.put("bot-1", "notes/a", [1, 2], ttl=3600)
            many = await mem.get_many("bot-1", ["plan", "notes/a", "missing"])
            assert many["missing"] is None and many["notes/a"] is not None
            assert many["notes/a"].expires_at is not None
            assert await mem.keys("bot-1") == ["notes/a", "plan"]
            await mem.delete("bot-1", "notes/a")
            assert await mem.keys("bot-1") == ["plan"]
            ops = [c.op async for c in mem.history("bot-1", page_size=2)]
            assert ops == ["put", "merge", "put", "put", "put", "delete"]
            # A retried write with the same request id is applied once.
            again = await mem.put("bot-1", "once", 1, request_id="rid-1")
            dup = await mem.put("bot-1", "once", 1, request_id="rid-1")
            assert dup.duplicate and dup.version == again.version
            with pytest.raises(InvalidRequestError) as bad:
                await mem.put("bot 1", "plan", {})
            assert bad.value.code == "invalid_name" and bad.value.status == 400
            assert await mem.agents() == ["bot-1"]

    asyncio.run(scenario())


def test_read_your_writes_across_two_shards_direct_and_through_the_router(
    up: LocalCluster,
) -> None:
    name = tenant()
    a, b = agents_on_different_shards(up, name)

    async def scenario(routing: str) -> None:
        async with AsyncMemory(up.router_url, tenant=name, routing=routing) as mem:  # type: ignore[arg-type]
            for i in range(50):
                wa = await mem.put(a, "n", i)
                wb = await mem.put(b, "n", i)
                ia, ib = await mem.get(a, "n"), await mem.get(b, "n")
                assert ia is not None and ia.value == i and ia.version == wa.version
                assert ib is not None and ib.value == i and ib.version == wb.version
            tokens = mem.tokens
            pa, pb = mem.partition_of(a), mem.partition_of(b)
            assert pa is not None and pb is not None and pa != pb
            assert tokens[pa] >= int(wa.version.split(":")[1])
            assert tokens[pb] >= int(wb.version.split(":")[1])

    asyncio.run(scenario("direct"))
    asyncio.run(scenario("router"))


def test_a_thousand_concurrent_updates_from_fifty_tasks_give_exactly_a_thousand(
    up: LocalCluster,
) -> None:
    async def scenario() -> int:
        async with AsyncMemory(up.router_url, tenant=tenant(), routing="direct") as mem:

            async def worker() -> None:
                for _ in range(20):
                    await mem.update("counter", "n", lambda n: (n or 0) + 1)

            await asyncio.gather(*(worker() for _ in range(50)))
            item = await mem.get("counter", "n", consistency="strong")
            assert item is not None
            return int(item.value)

    assert asyncio.run(scenario()) == 1000


def test_a_stale_directory_is_corrected_by_the_redirect(up: LocalCluster) -> None:
    name = tenant()

    async def scenario() -> None:
        async with AsyncMemory(up.router_url, tenant=name, routing="direct") as mem:
            directory = mem.directory
            assert directory is not None
            p = partition_for(name, "bot-1", directory.partitions)
            owner = directory.table[p]
            # Pretend the partition is owned by another shard: that node answers 307.
            wrong = list(directory.table)
            wrong[p] = (owner + 1) % 3
            mem._directory = dataclasses.replace(directory, table=tuple(wrong))
            written = await mem.put("bot-1", "k", "v")
            assert written.version.startswith(f"{p}:")
            assert mem.directory is not None and mem.directory.table[p] == owner

    asyncio.run(scenario())


def test_writes_go_on_through_a_directory_change_and_a_node_kill(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "data", shards=2)
    name = tenant()
    try:
        agent = "mover"
        path = cluster.data / "directory.json"
        directory = Directory.from_json(path.read_text())
        p = partition_for(name, agent, directory.partitions)
        source = directory.table[p]
        acked: dict[str, int] = {}

        async def scenario() -> None:
            async with AsyncMemory(
                cluster.router_url, tenant=name, routing="direct", token_file=cluster.token_file
            ) as mem:
                for i in range(30):
                    acked[f"k{i}"] = i
                    await mem.put(agent, f"k{i}", i)
                # The operator's move, by hand: the partition to the other shard.
                table = list(directory.table)
                table[p] = 1 - source
                moved = dataclasses.replace(
                    directory, epoch=directory.epoch + 1, table=tuple(table)
                )
                path.write_text(moved.to_json())
                for i in range(30, 60):
                    acked[f"k{i}"] = i
                    await mem.put(agent, f"k{i}", i)
                    await asyncio.sleep(0.05)
                assert mem.directory is not None and mem.directory.epoch == moved.epoch
                # The new owner dies; a write waits for it and goes through.
                cluster.processes[f"node-{1 - source}"].kill()
                cluster.processes[f"node-{1 - source}"].wait()
                threading.Timer(1.5, cluster.spawn_node, args=(1 - source,)).start()
                started = time.monotonic()
                await mem.put(agent, "after-kill", True)
                assert time.monotonic() - started > 1.0  # it really waited for the restart
                acked["after-kill"] = True  # type: ignore[assignment]
                found = await mem.get_many(agent, list(acked))
                missing = {k for k, item in found.items() if item is None or item.value != acked[k]}
                assert not missing, missing

        asyncio.run(scenario())
    finally:
        cluster.stop()


def test_watch_resumes_after_the_node_restarts_without_gaps_or_repeats(tmp_path: Path) -> None:
    cluster = start_cluster(tmp_path / "data", shards=1)
    try:

        async def scenario() -> list[int]:
            async with AsyncMemory(
                cluster.router_url, tenant="acme", routing="direct", token_file=cluster.token_file
            ) as mem:
                seen: list[int] = []

                async def watch() -> None:
                    async for change in mem.watch("bot-1"):
                        seen.append(change.value)
                        if len(seen) == 6:
                            return

                task = asyncio.create_task(watch())
                await asyncio.sleep(0.5)
                for i in range(3):
                    await mem.put("bot-1", "n", i)
                while len(seen) < 3:
                    await asyncio.sleep(0.05)
                cluster.processes["node-0"].send_signal(signal.SIGKILL)
                cluster.processes["node-0"].wait()
                cluster.spawn_node(0)
                for i in range(3, 6):
                    await mem.put("bot-1", "n", i)
                await asyncio.wait_for(task, 30)
                return seen

        assert asyncio.run(scenario()) == [0, 1, 2, 3, 4, 5]
    finally:
        cluster.stop()


def test_the_blocking_client_delegates_and_closes_its_thread(up: LocalCluster) -> None:
    before = threading.active_count()
    with Memory(up.router_url, tenant=tenant()) as mem:
        mem.put("bot-1", "plan", {"goal": "explore"})
        item = mem.get("bot-1", "plan")
        assert item is not None and item.value == {"goal": "explore"}
        value, written = mem.update("bot-1", "n", lambda n: (n or 0) + 1)
        assert value == 1
        changes = mem.watch("bot-1", after=written.version)
        mem.put("bot-1", "n", 5)
        assert next(changes).value == 5
        changes.close()
        assert [c.key for c in mem.history("bot-1")] == ["plan", "n", "n"]
    assert threading.active_count() == before
    with pytest.raises(RuntimeError):
        mem.get("bot-1", "plan")


def test_an_unreachable_cluster_is_a_typed_error_within_the_timeout() -> None:
    async def scenario() -> None:
        port = free_port_run(1)
        async with AsyncMemory(f"http://127.0.0.1:{port}", timeout=1.0) as mem:
            started = time.monotonic()
            with pytest.raises(UnavailableError) as exc:
                await mem.put("bot-1", "k", 1)
            assert time.monotonic() - started < 3
            assert "request_id" in exc.value.message

    asyncio.run(scenario())


def test_agentmem_up_starts_prints_stops_on_ctrl_c_and_keeps_its_data(tmp_path: Path) -> None:
    port = free_port_run(4)
    data = tmp_path / "data"

    def up() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agentmem", "up", "--data", str(data), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.startswith("Ctrl-C stops"):
                break
        text = "".join(lines)
        assert "ready at" in text and f"http://127.0.0.1:{port}" in text, text
        assert "from agentmem.client import Memory" in text
        assert f"AGENTMEM_TOKEN_FILE={data / 'token'}" in text
        return proc

    def stop(proc: subprocess.Popen[str]) -> str:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
        assert "agentmem up: stopped" in out
        return out

    proc = up()
    try:
        with Memory(f"http://127.0.0.1:{port}", tenant="acme", token_file=data / "token") as mem:
            mem.put("bot-1", "plan", {"goal": "explore"})
    finally:
        stop(proc)
    proc = up()
    try:
        with Memory(f"http://127.0.0.1:{port}", tenant="acme", token_file=data / "token") as mem:
            item = mem.get("bot-1", "plan")
            assert item is not None and item.value == {"goal": "explore"}
    finally:
        stop(proc)
