"""``AgentmemStore``: LangGraph's long-term memory store on agentmem.

Namespaces map onto agents and keys as :mod:`.names` describes: the first
label is the agent (so one user's or one agent's memories live together in one
partition), the rest of the namespace and the key form the agentmem key. An
item's value is kept with its timestamps and TTL::

    {"value": {...}, "created_at": "...", "updated_at": "...", "ttl": 5.0}

Batches are sent as few requests as possible: the reads of a batch become one
``batch-get`` per agent, the writes go out concurrently, each conditional on
the version the batch read (so ``created_at`` survives concurrent writers).

Queries that span agents (a search or ``list_namespaces`` whose prefix does
not name the agent) ask every shard for the tenant's agents (the SDK's
:meth:`~agentmem.client.AsyncMemory.agents`), then read those agents' keys;
the union is sorted as documented per method. Every answer moves the SDK's
per-partition session tokens on, so a later read sees at least as much. If a
shard does not answer, the query raises :class:`~agentmem.client.IncompleteError`
(with the partial result) unless the store was made with ``allow_partial=True``,
in which case it returns what answered and logs which partitions were missing.

Example::

    async with AgentmemStore.connect("http://127.0.0.1:7070", tenant="acme") as store:
        await store.aput(("user-1", "memories"), "food", {"likes": "pizza"})
        item = await store.aget(("user-1", "memories"), "food")
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from typing import Any

from langgraph.store.base import (
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
)
from langgraph.store.base.batch import AsyncBatchedBaseStore

from agentmem.client import AsyncMemory, ConflictError, IncompleteError
from agentmem.client.aio import gather_limited
from agentmem.client.types import Written
from agentmem.integrations.langgraph import names

log = logging.getLogger("agentmem.integrations.langgraph")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _item(namespace: tuple[str, ...], key: str, stored: dict[str, Any]) -> Item:
    return Item(
        value=stored["value"],
        key=key,
        namespace=namespace,
        created_at=dt.datetime.fromisoformat(stored["created_at"]),
        updated_at=dt.datetime.fromisoformat(stored["updated_at"]),
    )


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda a, b: bool(a == b),
    "$ne": lambda a, b: bool(a != b),
    "$gt": lambda a, b: a is not None and bool(a > b),
    "$gte": lambda a, b: a is not None and bool(a >= b),
    "$lt": lambda a, b: a is not None and bool(a < b),
    "$lte": lambda a, b: a is not None and bool(a <= b),
}


def _matches(value: dict[str, Any], filters: dict[str, Any] | None) -> bool:
    """LangGraph's filter semantics: equality, or ``$eq``/``$ne``/``$gt``/``$gte``/
    ``$lt``/``$lte`` on a (dotted-path) field of the value."""
    for path, wanted in (filters or {}).items():
        actual: Any = value
        for part in path.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        if isinstance(wanted, dict) and wanted and all(k.startswith("$") for k in wanted):
            for op, operand in wanted.items():
                compare = _OPERATORS.get(op)
                if compare is None:
                    raise ValueError(f"unsupported filter operator {op!r}: use one of {_OPERATORS}")
                try:
                    ok = compare(actual, operand)
                except TypeError:
                    ok = False
                if not ok:
                    return False
        elif actual != wanted:
            return False
    return True


def _condition_holds(condition: MatchCondition, namespace: tuple[str, ...]) -> bool:
    path = tuple(condition.path)
    if len(path) > len(namespace):
        return False
    part = namespace[: len(path)] if condition.match_type == "prefix" else namespace[-len(path) :]
    return all(p in ("*", n) for p, n in zip(path, part, strict=True))


class AgentmemStore(AsyncBatchedBaseStore):
    """A LangGraph ``BaseStore`` whose items live in an agentmem cluster.

    Make it inside a running event loop (``AsyncBatchedBaseStore`` batches on
    it); the sync methods work from other threads. ``ttl``: LangGraph's
    ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``).
    """

    supports_ttl = True

    def __init__(
        self,
        memory: AsyncMemory,
        *,
        ttl: TTLConfig | None = None,
        allow_partial: bool = False,
        index: IndexConfig | None = None,
    ) -> None:
        super().__init__()
        self.memory = memory
        self.ttl_config = ttl
        self.allow_partial = allow_partial
        #: Semantic search (LangGraph's IndexConfig): ``fields`` of each value are the
        #: text an item is found by (default: the whole value); with ``embed`` the
        #: store embeds them itself and sends the vectors, else the cluster's embedder
        #: does (spec.semantic.embedder). ``dims`` must match the cluster's.
        self.index_config = index
        self.embeddings = (
            ensure_embeddings(index.get("embed")) if index and index.get("embed") else None
        )
        self.index_fields = list((index or {}).get("fields") or ["$"])

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str = "http://127.0.0.1:7070",
        *,
        tenant: str = "default",
        ttl: TTLConfig | None = None,
        allow_partial: bool = False,
        token: str | None = None,
        token_file: str | None = None,
        index: IndexConfig | None = None,
    ) -> AsyncIterator[AgentmemStore]:
        """A store with its own SDK client, closed on exit (tokens as in :class:`AsyncMemory`)."""
        async with AsyncMemory(url, tenant=tenant, token=token, token_file=token_file) as memory:
            yield cls(memory, ttl=ttl, allow_partial=allow_partial, index=index)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return asyncio.run_coroutine_threadsafe(self.abatch(ops), self._loop).result()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        gets = [(i, op) for i, op in enumerate(ops) if isinstance(op, GetOp)]
        # The last put of a (namespace, key) in a batch wins, as in LangGraph's stores.
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for op in ops:
            if isinstance(op, PutOp):
                puts[(op.namespace, op.key)] = op
        # One batch-get per agent for every read and every put's current version.
        wanted: dict[str, set[str]] = {}
        for _, op in gets:
            wanted.setdefault(names.agent_of(op.namespace), set()).add(
                names.store_key(op.namespace, op.key)
            )
        for namespace, key in puts:
            wanted.setdefault(names.agent_of(namespace), set()).add(names.store_key(namespace, key))
        current = await self._read_many(wanted)
        # Reads see the state before the batch's writes, as in LangGraph's stores.
        refresh: list[tuple[str, str, tuple[dict[str, Any], str]]] = []
        for i, op in gets:
            agent, path = names.agent_of(op.namespace), names.store_key(op.namespace, op.key)
            found = current.get((agent, path))
            if found is not None:
                results[i] = _item(op.namespace, op.key, found[0])
                if self._refresh(op.refresh_ttl) and found[0].get("ttl"):
                    refresh.append((agent, path, found))
        for i, op in enumerate(ops):
            if isinstance(op, SearchOp):
                results[i] = await self._search(op)
            elif isinstance(op, ListNamespacesOp):
                results[i] = await self._list_namespaces(op)
        await gather_limited(self._put(op, current) for op in puts.values())
        if refresh:
            await gather_limited(self._touch(a, p, f) for a, p, f in refresh)
        return results

    def _refresh(self, asked: bool | None) -> bool:
        if asked is not None:
            return asked
        return bool(self.ttl_config and self.ttl_config.get("refresh_on_read", True))

    async def _read_many(
        self, wanted: dict[str, set[str]]
    ) -> dict[tuple[str, str], tuple[dict[str, Any], str]]:
        async def one(agent: str, paths: set[str]) -> list[tuple[tuple[str, str], Any]]:
            items = await self.memory.get_many(agent, sorted(paths))
            return [
                ((agent, path), (item.value, item.version))
                for path, item in items.items()
                if item is not None and isinstance(item.value, dict) and "value" in item.value
            ]

        found: dict[tuple[str, str], tuple[dict[str, Any], str]] = {}
        for pairs in await gather_limited(one(a, p) for a, p in wanted.items()):
            found.update(pairs)
        return found

    async def _put(
        self, op: PutOp, current: dict[tuple[str, str], tuple[dict[str, Any], str]]
    ) -> None:
        agent, path = names.agent_of(op.namespace), names.store_key(op.namespace, op.key)
        if op.value is None:
            await self.memory.delete(agent, path)
            return
        ttl_minutes = op.ttl
        if ttl_minutes is None and self.ttl_config:
            ttl_minutes = self.ttl_config.get("default_ttl")
        ttl = None if ttl_minutes is None else max(1, math.ceil(ttl_minutes * 60))
        before = current.get((agent, path))
        now = _now()

        def build(old: dict[str, Any] | None) -> dict[str, Any]:
            created = old["created_at"] if isinstance(old, dict) and "created_at" in old else now
            return {"value": op.value, "created_at": created, "updated_at": now,
                    "ttl": ttl_minutes}  # fmt: skip

        text, vector = await self._embedding(op)
        found_by: dict[str, Any] = {"text": text, "vector": vector}
        try:
            if before is None:
                await self.memory.put(agent, path, build(None), ttl=ttl, if_absent=True, **found_by)
            else:
                await self.memory.put(
                    agent, path, build(before[0]), ttl=ttl, if_version=before[1], **found_by
                )
        except ConflictError:  # someone wrote in between: read again, keep created_at
            await self.memory.update(agent, path, build, ttl=ttl, **found_by)

    async def _embedding(self, op: PutOp) -> tuple[str | None, list[float] | None]:
        """The text (and, with ``embed``, the vector) an item is found by; (None, None)
        when it is not to be indexed."""
        if self.index_config is None or op.index is False or op.value is None:
            return None, None
        fields = self.index_fields if op.index is None else list(op.index)
        texts = [t for f in fields for t in get_text_at_path(op.value, tokenize_path(f))]
        if not texts:
            return None, None
        text = "\n\n".join(texts)
        if self.embeddings is None:
            return text, None
        (vector,) = await self.embeddings.aembed_documents([text])
        return text, list(vector)

    async def _touch(self, agent: str, path: str, found: tuple[dict[str, Any], str]) -> None:
        """Extend an item's TTL on read (best effort: a concurrent write wins)."""
        stored, version = found
        ttl = max(1, math.ceil(float(stored["ttl"]) * 60))
        with suppress(ConflictError):
            await self.memory.put(agent, path, stored, ttl=ttl, if_version=version)

    async def _all_agents(self) -> list[str]:
        try:
            return await self.memory.agents()
        except IncompleteError as exc:
            if not self.allow_partial:
                raise
            log.warning("partitions %s did not answer; results are partial", exc.missing)
            return list(exc.partial)

    async def _items_under(
        self, prefix: tuple[str, ...]
    ) -> list[tuple[tuple[str, ...], str, dict[str, Any]]]:
        """Every item whose namespace starts with ``prefix`` (fans out when it names no agent)."""
        if prefix:
            agents = [names.agent_of(prefix)]
            key_prefix = names.STORE_PREFIX + "".join(names.encode(n) + "/" for n in prefix[1:])
        else:
            agents = [a for a in await self._all_agents() if not a.startswith(names.THREAD_PREFIX)]
            key_prefix = names.STORE_PREFIX

        async def of_agent(agent: str) -> list[tuple[tuple[str, ...], str, dict[str, Any]]]:
            keys = [k for k in await self.memory.keys(agent) if k.startswith(key_prefix)]
            if not keys:
                return []
            found = await self.memory.get_many(agent, keys)
            out = []
            for path, item in found.items():
                parsed = names.parse_store_key(agent, path)
                if parsed is None or item is None or not isinstance(item.value, dict):
                    continue
                out.append((parsed[0], parsed[1], item.value))
            return out

        return [x for part in await gather_limited(of_agent(a) for a in agents) for x in part]

    async def _search(self, op: SearchOp) -> list[SearchItem]:
        """Items under the prefix that match the filter, most recently updated first.

        With a ``query`` and an ``index`` configuration: the items closest in
        meaning, best first, with their scores (the cluster's vector search: one
        agent's partition when the prefix names the agent, else every shard).
        Without an index configuration the query does not rank: every score is None.
        """
        if op.query and self.index_config is not None:
            return await self._semantic_search(op)
        rows = [r for r in await self._items_under(op.namespace_prefix)
                if _matches(r[2]["value"], op.filter)]  # fmt: skip
        rows.sort(key=lambda r: (r[2]["updated_at"], r[0], r[1]), reverse=True)
        return [
            SearchItem(
                namespace=ns, key=key, value=stored["value"],
                created_at=dt.datetime.fromisoformat(stored["created_at"]),
                updated_at=dt.datetime.fromisoformat(stored["updated_at"]), score=None,
            )
            for ns, key, stored in rows[op.offset : op.offset + op.limit]
        ]  # fmt: skip

    async def _semantic_search(self, op: SearchOp) -> list[SearchItem]:
        assert op.query is not None
        prefix = op.namespace_prefix
        agent = names.agent_of(prefix) if prefix else None
        key_prefix = names.STORE_PREFIX + "".join(names.encode(n) + "/" for n in prefix[1:])
        vector = None
        if self.embeddings is not None:
            vector = list(await self.embeddings.aembed_query(op.query))
        found = await self.memory.search(
            None if vector is not None else op.query, vector=vector, agent=agent,
            key_prefix=key_prefix, k=min(1000, (op.offset + op.limit) * 2 + 10),
            allow_partial=self.allow_partial,
        )  # fmt: skip
        items = []
        for hit in found:
            parsed = names.parse_store_key(hit.agent, hit.key)
            stored = hit.value
            if parsed is None or not isinstance(stored, dict) or "value" not in stored:
                continue
            if not _matches(stored["value"], op.filter):
                continue
            items.append(
                SearchItem(
                    namespace=parsed[0],
                    key=parsed[1],
                    value=stored["value"],
                    created_at=dt.datetime.fromisoformat(stored["created_at"]),
                    updated_at=dt.datetime.fromisoformat(stored["updated_at"]),
                    score=hit.score,
                )
            )
        return items[op.offset : op.offset + op.limit]

    async def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        """Namespaces in use that meet the conditions, truncated to ``max_depth``,
        without duplicates, sorted."""
        prefix: tuple[str, ...] = ()
        for condition in op.match_conditions or ():
            if condition.match_type == "prefix" and condition.path and condition.path[0] != "*":
                prefix = (condition.path[0],)
        found: set[tuple[str, ...]] = set()
        for namespace, _, _ in await self._items_under(prefix):
            if all(_condition_holds(c, namespace) for c in op.match_conditions or ()):
                found.add(namespace[: op.max_depth] if op.max_depth else namespace)
        return sorted(found)[op.offset : op.offset + op.limit]

    # What BaseStore cannot say ------------------------------------------------------------

    async def aget_version(self, namespace: tuple[str, ...], key: str) -> tuple[Item, str] | None:
        """An item with the version a conditional put can name."""
        stored = await self.memory.get(names.agent_of(namespace), names.store_key(namespace, key))
        if stored is None or not isinstance(stored.value, dict) or "value" not in stored.value:
            return None
        return _item(namespace, key, stored.value), stored.version

    async def aput_if_version(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        version: str | None,
    ) -> Written:
        """Write only if the item is still at ``version`` (None: only if absent).

        Raises :class:`~agentmem.client.ConflictError` otherwise.
        """
        agent, path = names.agent_of(namespace), names.store_key(namespace, key)
        now = _now()
        created = now
        if version is not None:
            current = await self.aget_version(namespace, key)
            if current is not None:
                created = current[0].created_at.isoformat()
        stored = {"value": value, "created_at": created, "updated_at": now, "ttl": None}
        if version is None:
            return await self.memory.put(agent, path, stored, if_absent=True)
        return await self.memory.put(agent, path, stored, if_version=version)

    async def awatch(
        self, namespace: tuple[str, ...], *, after: str | None = None
    ) -> AsyncIterator[tuple[tuple[str, ...], str, Item | None]]:
        """Changes of the items under ``namespace`` as they happen: (namespace, key,
        the item, or None when it was deleted). Resumes by itself after reconnects."""
        agent = names.agent_of(namespace)
        key_prefix = names.STORE_PREFIX + "".join(names.encode(n) + "/" for n in namespace[1:])
        async for change in self.memory.watch(agent, after=after):
            if not change.key.startswith(key_prefix):
                continue
            parsed = names.parse_store_key(agent, change.key)
            if parsed is None:
                continue
            value = change.value
            item = _item(parsed[0], parsed[1], value) if isinstance(value, dict) else None
            yield parsed[0], parsed[1], item
