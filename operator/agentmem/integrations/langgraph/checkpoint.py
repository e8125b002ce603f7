"""``AgentmemSaver``: LangGraph checkpoints and pending writes in agentmem.

A thread is one agent (``thread.<encoded thread id>``, see :mod:`.names`), so
a thread's checkpoints live in one partition and are written through its log:
concurrent runs of one thread are ordered there, and a read after a write sees
it (session tokens). Per thread:

- ``cp/<ns>/<checkpoint id>``: the checkpoint (serialized with the saver's
  serde, base64), its metadata (serialized, plus a JSON copy for filters) and
  its parent's id;
- ``w/<ns>/<checkpoint id>/<task id>/<idx>``: one pending write.

Checkpoint ids are time-ordered (uuid6), so the newest is the greatest.
``list`` without a thread, and ``delete_for_runs``, span threads: they ask
every shard for the tenant's threads (a partial answer raises
:class:`~agentmem.client.IncompleteError`). The history of every change stays
in the log's audit window (``AsyncMemory.history`` of the thread's agent).

Every capability of LangGraph's conformance suite is implemented: put,
put_writes, get_tuple, list, delete_thread, and delete_for_runs, copy_thread
and prune. Values are limited by the cluster's largest value (1 MiB by
default) per checkpoint and per write.

Example::

    with AgentmemSaver.connect("http://127.0.0.1:7070", tenant="acme") as saver:
        graph = builder.compile(checkpointer=saver)
"""

from __future__ import annotations

import base64
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from agentmem.client import ConflictError, Memory
from agentmem.client.aio import AsyncMemory, gather_limited
from agentmem.integrations.langgraph import names

T = TypeVar("T")


def _pack(typed: tuple[str, bytes]) -> list[str]:
    return [typed[0], base64.b64encode(typed[1]).decode("ascii")]


def _unpack(packed: list[str]) -> tuple[str, bytes]:
    return packed[0], base64.b64decode(packed[1])


def _jsonable(metadata: Any) -> Any:
    try:
        return json.loads(json.dumps(metadata))
    except (TypeError, ValueError):
        if isinstance(metadata, dict):
            return {k: _jsonable(v) for k, v in metadata.items()}
        return None


class AgentmemSaver(BaseCheckpointSaver[str]):
    """A LangGraph checkpointer (sync and async) on an agentmem cluster."""

    def __init__(self, memory: Memory, *, serde: SerializerProtocol | None = None) -> None:
        super().__init__(serde=serde)
        self.memory = memory

    @classmethod
    @contextmanager
    def connect(
        cls,
        url: str = "http://127.0.0.1:7070",
        *,
        tenant: str = "default",
        token: str | None = None,
        token_file: str | None = None,
    ) -> Iterator[AgentmemSaver]:
        """A saver with its own SDK client, closed on exit (tokens as in :class:`Memory`)."""
        with Memory(url, tenant=tenant, token=token, token_file=token_file) as memory:
            yield cls(memory)

    @property
    def _aio(self) -> AsyncMemory:
        return self.memory.aio

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.memory.run(coro)

    async def _async(self, coro: Coroutine[Any, Any, T]) -> T:
        return await self.memory.run_async(coro)

    # Reading -----------------------------------------------------------------------

    async def _thread(self, thread_id: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
        """A thread's checkpoints and writes: key -> stored value."""
        agent = names.thread_agent(thread_id)
        keys = await self._aio.keys(agent)
        if not keys:
            return {}, {}
        values = await self._aio.get_many(agent, keys)
        checkpoints = {
            k: v.value for k, v in values.items() if v is not None and k.startswith("cp/")
        }
        writes = {k: v.value for k, v in values.items() if v is not None and k.startswith("w/")}
        return checkpoints, writes

    def _tuple(
        self,
        thread_id: str,
        stored: dict[str, Any],
        writes: dict[str, Any],
    ) -> CheckpointTuple:
        ns, checkpoint_id = stored["ns"], stored["id"]
        prefix = f"w/{names.encode(ns)}/{names.encode(checkpoint_id)}/"
        pending = sorted(
            (w for k, w in writes.items() if k.startswith(prefix)), key=lambda w: w["seq"]
        )
        parent = stored.get("parent")
        return CheckpointTuple(
            config={"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                     "checkpoint_id": checkpoint_id}},
            checkpoint=self.serde.loads_typed(_unpack(stored["checkpoint"])),
            metadata=self.serde.loads_typed(_unpack(stored["metadata"])),
            parent_config=None if parent is None else {
                "configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": parent}
            },
            pending_writes=[
                (w["task_id"], w["channel"], self.serde.loads_typed(_unpack(w["value"])))
                for w in pending
            ],
        )  # fmt: skip

    async def _get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = get_checkpoint_id(config)
        checkpoints, writes = await self._thread(thread_id)
        mine = [c for c in checkpoints.values() if c["ns"] == ns]
        if checkpoint_id:
            mine = [c for c in mine if c["id"] == checkpoint_id]
        if not mine:
            return None
        return self._tuple(thread_id, max(mine, key=lambda c: c["id"]), writes)

    async def _threads(self) -> list[str]:
        agents = await self._aio.agents()
        return [t for a in agents if (t := names.thread_of(a)) is not None]

    async def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> list[CheckpointTuple]:
        configurable = (config or {}).get("configurable", {})
        if "thread_id" in configurable:
            threads = [str(configurable["thread_id"])]
        else:
            threads = sorted(await self._threads())
        ns_wanted = configurable.get("checkpoint_ns")
        id_wanted = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        out: list[CheckpointTuple] = []
        contents = await gather_limited(self._thread(t) for t in threads)
        for thread_id, (checkpoints, writes) in zip(threads, contents, strict=True):
            rows = sorted(checkpoints.values(), key=lambda c: (c["ns"], c["id"]))
            by_ns: dict[str, list[dict[str, Any]]] = {}
            for row in rows:
                by_ns.setdefault(row["ns"], []).append(row)
            for ns, ns_rows in by_ns.items():
                if ns_wanted is not None and ns != ns_wanted:
                    continue
                for row in sorted(ns_rows, key=lambda c: c["id"], reverse=True):
                    if id_wanted and row["id"] != id_wanted:
                        continue
                    if before_id and row["id"] >= before_id:
                        continue
                    meta = row.get("filter") or {}
                    if filter and not all(meta.get(k) == v for k, v in filter.items()):
                        continue
                    out.append(self._tuple(thread_id, row, writes))
                    if limit is not None and len(out) >= limit:
                        return out
        return out

    # Writing -----------------------------------------------------------------------

    async def _put(
        self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata
    ) -> RunnableConfig:
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"].get("checkpoint_ns", "")
        full = get_checkpoint_metadata(config, metadata)
        stored = {
            "ns": ns,
            "id": checkpoint["id"],
            "parent": config["configurable"].get("checkpoint_id"),
            "checkpoint": _pack(self.serde.dumps_typed(checkpoint)),
            "metadata": _pack(self.serde.dumps_typed(full)),
            "filter": _jsonable(full),
        }
        key = f"cp/{names.encode(ns)}/{names.encode(checkpoint['id'])}"
        await self._aio.put(names.thread_agent(thread_id), key, stored)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns,
                                 "checkpoint_id": checkpoint["id"]}}  # fmt: skip

    async def _put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> None:
        thread_id = str(config["configurable"]["thread_id"])
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = str(config["configurable"]["checkpoint_id"])
        agent = names.thread_agent(thread_id)
        base = time.time_ns()

        async def one(idx: int, channel: str, value: Any) -> None:
            slot = WRITES_IDX_MAP.get(channel, idx)
            key = (f"w/{names.encode(ns)}/{names.encode(checkpoint_id)}/"
                   f"{names.encode(task_id)}/{slot}")  # fmt: skip
            stored = {
                "task_id": task_id, "channel": channel, "task_path": task_path,
                "value": _pack(self.serde.dumps_typed(value)), "seq": base + idx,
            }  # fmt: skip
            # A regular write is kept once (a retried task must not add it twice);
            # the special channels (errors, interrupts, ...) are replaced.
            with contextlib.suppress(ConflictError):
                await self._aio.put(agent, key, stored, if_absent=slot >= 0)

        await gather_limited(one(i, c, v) for i, (c, v) in enumerate(writes))

    async def _delete_keys(self, agent: str, keys: Sequence[str]) -> None:
        await gather_limited(self._aio.delete(agent, k) for k in keys)

    async def _delete_thread(self, thread_id: str) -> None:
        agent = names.thread_agent(thread_id)
        await self._delete_keys(agent, await self._aio.keys(agent))

    async def _delete_for_runs(self, run_ids: Sequence[str]) -> None:
        wanted = set(run_ids)
        if not wanted:
            return
        for thread_id in await self._threads():
            checkpoints, writes = await self._thread(thread_id)
            doomed = [k for k, c in checkpoints.items()
                      if (c.get("filter") or {}).get("run_id") in wanted]  # fmt: skip
            prefixes = tuple(
                f"w/{names.encode(checkpoints[k]['ns'])}/{names.encode(checkpoints[k]['id'])}/"
                for k in doomed
            )
            doomed += [k for k in writes if prefixes and k.startswith(prefixes)]
            await self._delete_keys(names.thread_agent(thread_id), doomed)

    async def _copy_thread(self, source: str, target: str) -> None:
        checkpoints, writes = await self._thread(source)
        agent = names.thread_agent(target)
        await gather_limited(
            self._aio.put(agent, k, v) for k, v in {**checkpoints, **writes}.items()
        )

    async def _prune(self, thread_ids: Sequence[str], strategy: str) -> None:
        if strategy not in ("keep_latest", "delete"):
            raise ValueError(f"unknown prune strategy {strategy!r}: keep_latest or delete")
        for thread_id in thread_ids:
            if strategy == "delete":
                await self._delete_thread(thread_id)
                continue
            checkpoints, writes = await self._thread(thread_id)
            latest: dict[str, str] = {}
            for c in checkpoints.values():
                if c["id"] > latest.get(c["ns"], ""):
                    latest[c["ns"]] = c["id"]
            doomed = [k for k, c in checkpoints.items() if c["id"] != latest[c["ns"]]]
            keep = tuple(f"w/{names.encode(ns)}/{names.encode(i)}/" for ns, i in latest.items())
            doomed += [k for k in writes if not k.startswith(keep)]
            await self._delete_keys(names.thread_agent(thread_id), doomed)

    # BaseCheckpointSaver, sync ----------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self._get_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        yield from self._sync(self._list(config, filter, before, limit))

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self._put(config, checkpoint, metadata))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self._put_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self._delete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self._delete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self._copy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self._prune(thread_ids, strategy))

    # BaseCheckpointSaver, async ---------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._async(self._get_tuple(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for row in await self._async(self._list(config, filter, before, limit)):
            yield row

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._async(self._put(config, checkpoint, metadata))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._async(self._put_writes(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._async(self._delete_thread(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await self._async(self._delete_for_runs(run_ids))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._async(self._copy_thread(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await self._async(self._prune(thread_ids, strategy))

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions that sort as strings: a zero-padded counter and a random tie-breaker."""
        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"
