"""``AsyncMemory``: the asyncio client of an agentmem cluster.

It reads the cluster's directory (``/v1/directory`` of the URL it is given, a
router or any node) and sends each request straight to the shard that owns the
agent; it keeps a session token per partition, so reads see this client's own
writes, and never go back in time, on any shard or replica, without the caller
passing versions; it retries what is safe to retry with the same request id.

Example::

    async with AsyncMemory("http://127.0.0.1:7070", tenant="acme") as mem:
        await mem.put("bot-1", "plan", {"goal": "explore"})
        item = await mem.get("bot-1", "plan")
        await mem.update("bot-1", "visits", lambda n: (n or 0) + 1)
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import aiohttp
from yarl import URL

from agentmem.client.errors import (
    AgentmemError,
    ConflictError,
    ContendedError,
    IncompleteError,
    InvalidRequestError,
    UnavailableError,
    error_for,
)
from agentmem.client.types import Change, Hit, Item, Written
from agentmem.directory import Directory, DirectoryError, ShardEntry, partition_for
from agentmem.directory.names import InvalidNameError, check_agent, check_key, check_tenant
from agentmem.runtime import tracing
from agentmem.runtime.search import merge, missing_partitions, shard_requests
from agentmem.runtime.tls import client_context

log = logging.getLogger("agentmem.client")

Consistency = Literal["eventual", "session", "strong"]
Routing = Literal["auto", "direct", "router"]
T = TypeVar("T")

#: Statuses worth retrying with the same request id: the cluster is moving or busy.
RETRYABLE = frozenset({502, 503, 504})
#: How long an endpoint that could not be connected to is avoided (``auto`` routing).
UNREACHABLE_SECONDS = 30.0


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class AsyncMemory:
    """A connection pool to one agentmem cluster, for one tenant.

    ``url``: a router or any memory node (``agentmem up`` prints it).
    ``routing``: ``auto`` (straight to the owning shard, through ``url`` for a
    shard that cannot be reached), ``direct`` (never through ``url``) or
    ``router`` (always through ``url``).
    ``zone``: prefer a replica in this zone when the directory lists replicas.
    ``consistency``: of reads (``session``: read-your-writes and monotonic reads).
    ``timeout``: seconds an operation may take, retries included.
    ``token``: the bearer token (JWT) sent with every request; ``token_file``:
    a file holding it, read again when it changes (a pod's projected
    service-account token is rotated by the kubelet). They default to the
    ``AGENTMEM_TOKEN`` and ``AGENTMEM_TOKEN_FILE`` variables. The subject of the
    token is what the cluster records as the actor of each write.
    ``tls_ca``: the CA to trust for an ``https://`` URL (default:
    ``AGENTMEM_TLS_CA``, else the system's);
    ``tls_cert``/``tls_key``: a client certificate of the cluster's CA, which
    the nodes require under mutual TLS: without one, requests go through the
    router (``url``) whatever ``routing`` says.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:7070",
        *,
        tenant: str = "default",
        routing: Routing = "auto",
        zone: str | None = None,
        consistency: Consistency = "session",
        timeout: float = 15.0,
        token: str | None = None,
        token_file: str | os.PathLike[str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        max_connections: int = 256,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self._scheme = "https" if self.url.startswith("https://") else "http"
        self._ssl: ssl.SSLContext | bool = True
        if self._scheme == "https":
            tls_ca = tls_ca or os.environ.get("AGENTMEM_TLS_CA") or None
            self._ssl = client_context(
                _path(tls_ca), _path(tls_cert), _path(tls_key) if tls_cert else None
            )
            if tls_cert is None:
                routing = "router"  # the nodes want a client certificate we do not have
        self.tenant = _checked(check_tenant, tenant)
        self.routing = routing
        self.zone = zone
        self.consistency = consistency
        self.timeout = timeout
        self._credentials = BearerToken(token, token_file)
        self._max_connections = max_connections
        self._extra_headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None
        self._first_try_timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=5)
        self._directory: Directory | None = None
        self._previous: Directory | None = None
        self._directory_checked = 0.0
        self._directory_lock = asyncio.Lock()
        self._tokens: dict[int, int] = {}
        self._agent_partitions: dict[str, int] = {}
        self._unreachable: dict[str, float] = {}
        self._closed = False

    # Life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> AsyncMemory:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Open the connection pool and read the directory (done on first use otherwise)."""
        self._ensure_session()
        await self._refresh_directory(force=True)

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this AsyncMemory is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._max_connections,
                    keepalive_timeout=30,
                    use_dns_cache=False,
                    ssl=self._ssl,
                ),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            )
        return self._session

    async def aclose(self) -> None:
        """Close the connection pool (``async with`` does it for you)."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    # What the client knows -----------------------------------------------------------

    @property
    def directory(self) -> Directory | None:
        """The directory the client routes by (None: a single node serves everything)."""
        return self._directory

    @property
    def tokens(self) -> dict[int, int]:
        """The session tokens: per partition, the highest offset this client has seen."""
        return dict(self._tokens)

    def partition_of(self, agent: str) -> int | None:
        if self._directory is not None:
            return partition_for(self.tenant, agent, self._directory.partitions)
        return self._agent_partitions.get(agent)

    # Keys ----------------------------------------------------------------------------

    async def get(
        self, agent: str, key: str, *, consistency: Consistency | None = None
    ) -> Item | None:
        """The key's item, or None when it is not set.

        >>> item = await mem.get("bot-1", "plan")
        >>> item.value if item else None
        """
        answer = await self._call(
            "GET", agent, f"keys/{key}", params=self._read_params(agent, consistency)
        )
        if answer.status == 404:
            body = answer.json()
            if isinstance(body, dict) and body.get("error") == "not_found":
                return None
        data = self._expect(answer, 200)
        return _item(data)

    async def get_many(
        self, agent: str, keys: Sequence[str], *, consistency: Consistency | None = None
    ) -> dict[str, Item | None]:
        """Several keys of one agent in one request (up to 1,000 per request)."""
        out: dict[str, Item | None] = {}
        for start in range(0, len(keys), 1000):
            chunk = list(keys[start : start + 1000])
            answer = await self._call(
                "POST",
                agent,
                "batch-get",
                params=self._read_params(agent, consistency),
                body=json.dumps({"keys": chunk}).encode(),
                content_type="application/json",
            )
            items = self._expect(answer, 200)["items"]
            for key, data in zip(chunk, items, strict=True):
                out[key] = None if data is None else _item(data)
        return out

    async def keys(self, agent: str, *, consistency: Consistency | None = None) -> list[str]:
        """The agent's keys, sorted."""
        answer = await self._call(
            "GET", agent, "keys", params=self._read_params(agent, consistency)
        )
        return list(self._expect(answer, 200)["keys"])

    async def put(
        self,
        agent: str,
        key: str,
        value: Any,
        *,
        ttl: int | None = None,
        if_version: str | None = None,
        if_absent: bool = False,
        request_id: str | None = None,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        embed: Sequence[str] | None = None,
    ) -> Written:
        """Set a key to a JSON value; conditionally with ``if_version``/``if_absent``.

        To find it by meaning later (:meth:`search`), give the ``text`` it is about
        (the cluster's embedder embeds it), your own ``vector``, or ``embed`` names
        of the value's fields whose text is embedded.

        Raises :class:`ConflictError` when the condition does not hold.

        >>> await mem.put("bot-1", "plan", {"goal": "explore"}, ttl=3600)
        >>> await mem.put("bot-1", "note-7", {"text": "dock 3 is blocked"}, embed=["text"])
        """
        body, content_type, params = _memory(value, "application/json", text, vector, embed)
        return await self._write(
            "PUT", agent, key, body, content_type, ttl, if_version, if_absent, request_id, params,
        )  # fmt: skip

    async def patch(
        self,
        agent: str,
        key: str,
        patch: Mapping[str, Any],
        *,
        ttl: int | None = None,
        if_version: str | None = None,
        request_id: str | None = None,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        embed: Sequence[str] | None = None,
    ) -> Written:
        """Apply a JSON merge patch (RFC 7396): ``None`` removes a member.

        ``text``, ``vector`` and ``embed`` as for :meth:`put` (``embed`` reads the
        merged value); without them the key is no longer found by :meth:`search`."""
        body, content_type, params = _memory(
            patch, "application/merge-patch+json", text, vector, embed
        )
        return await self._write(
            "PATCH", agent, key, body, content_type, ttl, if_version, False, request_id, params,
        )  # fmt: skip

    async def delete(
        self,
        agent: str,
        key: str,
        *,
        if_version: str | None = None,
        request_id: str | None = None,
    ) -> Written:
        """Delete a key (deleting a missing key succeeds)."""
        return await self._write(
            "DELETE", agent, key, None, None, None, if_version, False, request_id
        )

    async def update(
        self,
        agent: str,
        key: str,
        fn: Callable[[Any], Any],
        *,
        ttl: int | None = None,
        attempts: int = 1000,
        text: str | None = None,
        vector: Sequence[float] | None = None,
        embed: Sequence[str] | None = None,
    ) -> tuple[Any, Written]:
        """Read the key, compute ``fn(value)`` (``None`` when absent), and write the
        result only if nobody changed the key in between; retry on conflict.
        ``text``, ``vector`` and ``embed`` as for :meth:`put`.

        Returns the value written and its version. Nothing is lost under
        contention: every successful update saw the value it replaced.

        >>> value, _ = await mem.update("bot-1", "visits", lambda n: (n or 0) + 1)
        """
        for attempt in range(attempts):
            current = await self.get(agent, key)
            new = fn(None if current is None else current.value)
            try:
                if current is None:
                    written = await self.put(
                        agent, key, new, ttl=ttl, if_absent=True, text=text, vector=vector,
                        embed=embed,
                    )  # fmt: skip
                else:
                    written = await self.put(
                        agent, key, new, ttl=ttl, if_version=current.version, text=text,
                        vector=vector, embed=embed,
                    )  # fmt: skip
                return new, written
            except ConflictError as exc:
                if exc.current_version is not None:
                    self._note_version(exc.current_version)
                # Contention: back off, exponentially with jitter, so that of many
                # writers racing for one key most stay out of the way of the next round.
                await asyncio.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 7)))
        raise ContendedError(
            "contended", f"{key} changed {attempts} times while updating it; retry later"
        )

    # History and watch ---------------------------------------------------------------

    async def history(
        self, agent: str, *, after: str | None = None, page_size: int = 500
    ) -> AsyncIterator[Change]:
        """The agent's changes in the log's audit window, oldest first, with outcomes."""
        cursor = after
        while True:
            params = {"limit": str(page_size)}
            if cursor is not None:
                params["after"] = cursor
            answer = await self._call("GET", agent, "history", params=params)
            data = self._expect(answer, 200)
            for entry in data["events"]:
                yield Change.from_json(entry)
            next_after = data.get("next_after")
            if not data["events"] or next_after is None or next_after == cursor:
                return
            cursor = next_after

    async def watch(self, agent: str, *, after: str | None = None) -> AsyncIterator[Change]:
        """The agent's changes as they are applied, for as long as you iterate.

        ``after`` (a version) replays what came after it first. The stream
        resumes by itself after a disconnect, a node restart or a partition's
        move, from the last change it delivered: nothing is skipped or repeated.

        >>> async for change in mem.watch("bot-1"):
        ...     print(change.key, change.value)
        """
        last = after
        failures = 0
        while True:
            params = {} if last is None else {"after": last}
            try:
                async for event, data in self._stream(agent, "watch", params):
                    failures = 0
                    if event == "change":
                        change = Change.from_json(data)
                        last = change.version
                        self._note_version(change.version)
                        yield change
                    elif event == "overflow":
                        last = str(data["resume_after"])
                        break
                    elif event == "error":
                        raise error_for(503, data)
            except (AgentmemError, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if isinstance(exc, InvalidRequestError):
                    raise
                failures += 1
                log.info("watch of %s interrupted (%s); resuming after %s", agent, exc, last)
            await asyncio.sleep(min(2.0, 0.05 * 2**failures) * random.uniform(0.5, 1.0))
            if failures:
                await self._refresh_directory(force=True)

    # Queries across agents -----------------------------------------------------------

    async def agents(self) -> list[str]:
        """The tenant's agents that have keys, from every shard (sorted).

        Raises :class:`IncompleteError` (with the answering shards' agents in
        ``partial``) when some partitions did not answer.
        """
        await self._refresh_directory()
        directory = self._directory
        if directory is None or self.routing == "router":
            answer = await self._call_base("GET", self.url, f"/v1/tenants/{self.tenant}/agents")
            data = self._expect(answer, 200)
            self._note_partitions(data.get("partitions", {}))
            missing = sorted(int(p) for p in data.get("missing", []))
            if missing:
                raise IncompleteError(
                    f"partitions {missing} did not answer", sorted(data["agents"]), missing
                )
            return sorted(data["agents"])
        found: set[str] = set()
        covered: set[int] = set()
        shards = sorted(directory.assigned_shards())
        results = await asyncio.gather(
            *(self._agents_of(directory.owner(directory.partitions_of(s)[0])) for s in shards),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException):
                if not isinstance(result, AgentmemError):
                    raise result
                log.warning("listing agents: %s", result)
                continue
            agents, partitions = result
            found.update(agents)
            covered.update(partitions)
        missing = sorted(set(range(directory.partitions)) - covered)
        if missing:
            raise IncompleteError(
                f"{len(missing)} of {directory.partitions} partitions did not answer "
                f"({missing[:8]}...): their shards are moving or down; retry",
                sorted(found),
                missing,
            )
        return sorted(found)

    async def _agents_of(self, shard: ShardEntry) -> tuple[list[str], list[int]]:
        base = self._base_for(shard)
        answer = await self._call_base("GET", base, f"/v1/tenants/{self.tenant}/agents")
        data = self._expect(answer, 200)
        self._note_partitions(data.get("partitions", {}))
        return list(data["agents"]), [int(p) for p in data.get("partitions", {})]

    # Search --------------------------------------------------------------------------

    async def search(
        self,
        query: str | None = None,
        *,
        vector: Sequence[float] | None = None,
        agent: str | None = None,
        k: int = 10,
        filter: Mapping[str, Any] | None = None,
        key_prefix: str = "",
        agent_prefix: str = "",
        consistency: Consistency | None = None,
        allow_partial: bool = False,
    ) -> list[Hit]:
        """The ``k`` keys closest in meaning to ``query`` (or ``vector``), best first.

        With ``agent``, that agent's own memory (session-local: one shard);
        without, the whole tenant's (global: every shard, merged), narrowed by
        ``agent_prefix``. ``key_prefix`` and ``filter`` (conditions on value
        fields, ``{"kind": "fact", "n": {"$gt": 2}}``) narrow both. With
        ``session`` consistency (the default) the search sees every write this
        client made or read; ``strong`` sees every write acknowledged before it.

        A tenant-wide search some shards did not answer raises
        :class:`IncompleteError` (with the other shards' hits in ``partial``),
        unless ``allow_partial``.
        """
        body: dict[str, Any] = {"k": k, "consistency": consistency or self.consistency}
        if query is not None:
            body["query"] = query
        if vector is not None:
            body["vector"] = [float(x) for x in vector]
        if filter:
            body["filter"] = dict(filter)
        if key_prefix:
            body["key_prefix"] = key_prefix
        if agent is not None:
            if body["consistency"] == "session":
                p = self.partition_of(agent)
                if p is not None and p in self._tokens:
                    body["min_version"] = f"{p}:{self._tokens[p]}"
            answer = await self._call("POST", agent, "search", body=_dump(body),
                                      content_type="application/json")  # fmt: skip
            data = self._expect(answer, 200)
            self._note_partitions(data.get("partitions", {}))
            return [Hit.from_json(item) for item in data["items"]]
        if agent_prefix:
            body["agent_prefix"] = agent_prefix
        if body["consistency"] == "session" and self._tokens:
            body["min_versions"] = {str(p): o for p, o in self._tokens.items()}
        await self._refresh_directory()
        directory = self._directory
        if directory is None or self.routing == "router":
            answer = await self._call_base(
                "POST", self.url, f"/v1/tenants/{self.tenant}/search", _dump(body)
            )
            data = self._expect(answer, 200)
            answers, missing = [data], [int(p) for p in data.get("missing", [])]
        else:
            asks = shard_requests(body, directory)
            results = await asyncio.gather(
                *(self._search_shard(directory, ask) for ask in asks.values()),
                return_exceptions=True,
            )
            answers, answered = [], []
            for shard, result in zip(asks, results, strict=True):
                if isinstance(result, BaseException):
                    if not isinstance(result, AgentmemError) or 400 <= (result.status or 0) < 500:
                        raise result
                    log.warning("searching shard %s: %s", shard, result)
                    continue
                answers.append(result)
                answered.append(shard)
            missing = missing_partitions(asks, answered)
        for data in answers:
            self._note_partitions(data.get("partitions", {}))
        metric = answers[0].get("metric", "COSINE") if answers else "COSINE"
        hits = [Hit.from_json(item) for item in merge(answers, k, metric)]
        if missing and not allow_partial:
            raise IncompleteError(
                f"{len(missing)} partitions did not answer ({missing[:8]}...): their shards are "
                "moving or down; retry, or search with allow_partial=True",
                hits,
                missing,
            )
        return hits

    async def _search_shard(self, directory: Directory, body: dict[str, Any]) -> dict[str, Any]:
        base = self._base_for(directory.owner(body["partitions"][0]))
        answer = await self._call_base(
            "POST", base, f"/v1/tenants/{self.tenant}/search", _dump(body)
        )
        data: dict[str, Any] = self._expect(answer, 200)
        return data

    # Plumbing ------------------------------------------------------------------------

    async def _write(
        self,
        method: str,
        agent: str,
        key: str,
        body: bytes | None,
        content_type: str | None,
        ttl: int | None,
        if_version: str | None,
        if_absent: bool,
        request_id: str | None,
        extra: Mapping[str, str] | None = None,
    ) -> Written:
        headers = {"X-Request-Id": request_id or uuid.uuid4().hex}
        if if_version is not None:
            headers["If-Match"] = if_version
        elif if_absent:
            headers["If-None-Match"] = "*"
        params = dict(extra or {})
        if ttl is not None:
            params["ttl"] = str(ttl)
        answer = await self._call(
            method, agent, f"keys/{key}", params=params, body=body, content_type=content_type,
            headers=headers,
        )  # fmt: skip
        data = self._expect(answer, 200)
        self._note_version(data["version"])
        return Written(key=data["key"], version=data["version"], duplicate=data["duplicate"])

    def _read_params(self, agent: str, consistency: Consistency | None) -> dict[str, str]:
        chosen = consistency or self.consistency
        params: dict[str, str] = {"consistency": chosen}
        if chosen == "session":
            p = self.partition_of(agent)
            if p is not None and p in self._tokens:
                params["min_version"] = f"{p}:{self._tokens[p]}"
        return params

    def _expect(self, answer: _Answer, status: int) -> Any:
        if answer.status == status:
            return answer.json()
        try:
            body = answer.json()
        except ValueError:
            body = None
        raise error_for(answer.status, body if isinstance(body, dict) else None)

    def _note_version(self, version: str) -> None:
        p, _, offset = version.partition(":")
        if p.isdigit() and offset.lstrip("-").isdigit():
            partition, value = int(p), int(offset)
            if value > self._tokens.get(partition, -1):
                self._tokens[partition] = value

    def _note_partitions(self, partitions: Mapping[str, Any]) -> None:
        for p, offset in partitions.items():
            self._note_version(f"{p}:{offset}")

    def _note_answer(self, agent: str | None, headers: Mapping[str, str]) -> None:
        applied = headers.get("X-Agentmem-Applied")
        if applied:
            self._note_version(applied)
            if agent is not None and self._directory is None:
                self._agent_partitions[agent] = int(applied.partition(":")[0])

    def _newer_epoch(self, headers: Mapping[str, str]) -> bool:
        raw = headers.get("X-Agentmem-Epoch")
        current = self._directory
        return bool(raw and raw.isdigit() and current is not None and int(raw) > current.epoch)

    def _base_for(self, shard: ShardEntry) -> str:
        """The base URL for a shard: a replica in our zone if listed, else its endpoint."""
        if self.routing == "router":
            return self.url
        endpoint = shard.endpoint
        if self.zone is not None:
            for replica in shard.replicas:
                if replica.zone == self.zone:
                    endpoint = replica.endpoint
                    break
        if self.routing == "auto" and self._unreachable.get(endpoint, 0.0) > time.monotonic():
            return self.url
        return f"{self._scheme}://{endpoint}"

    def _target(self, agent: str) -> tuple[str, int | None]:
        directory = self._directory
        if directory is None or self.routing == "router":
            return self.url, None
        owner = directory.owner(partition_for(self.tenant, agent, directory.partitions))
        base = self._base_for(owner)
        return base, (directory.epoch if base != self.url else None)

    def _headers(self, headers: Mapping[str, str] | None = None) -> dict[str, str]:
        """The headers of every request (the token among them), and ``headers``."""
        sent = {**self._extra_headers, **(headers or {})}
        authorization = self._credentials.header()
        if authorization is not None:
            sent["Authorization"] = authorization
        return sent

    async def _refresh_directory(self, force: bool = False, source: str | None = None) -> None:
        """Reread the directory (at most once a second unless forced)."""
        if not force and time.monotonic() - self._directory_checked < 1.0:
            return
        async with self._directory_lock:
            if not force and time.monotonic() - self._directory_checked < 1.0:
                return
            self._directory_checked = time.monotonic()
            session = self._ensure_session()
            for base in dict.fromkeys([source or self.url, self.url]):
                try:
                    async with session.get(
                        f"{base}/v1/directory",
                        headers=self._headers(),
                        timeout=aiohttp.ClientTimeout(total=5),
                    ) as resp:
                        if resp.status == 404:
                            self._directory = None  # one node serves every partition
                            return
                        if resp.status != 200:
                            continue
                        directory = Directory.from_json(await resp.text())
                except (aiohttp.ClientError, OSError, TimeoutError, DirectoryError) as exc:
                    log.debug("reading the directory from %s failed: %s", base, exc)
                    continue
                current = self._directory
                if current is None or directory.epoch >= current.epoch:
                    if current is not None and directory.epoch > current.epoch:
                        self._previous = current
                    self._directory = directory
                return

    async def _call(
        self,
        method: str,
        agent: str,
        suffix: str,
        *,
        params: Mapping[str, str] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Answer:
        """Send a request about an agent to its shard: follow redirects, retry what
        is retryable until the deadline, note the session tokens of the answer."""
        if self._session is None:
            await self.start()
        _checked(check_agent, agent)
        if suffix.startswith("keys/"):
            _checked(check_key, suffix[5:])
        path = f"/v1/tenants/{self.tenant}/agents/{agent}/{suffix}"
        with tracing.client_span(
            f"agentmem {method} {suffix.split('/', 1)[0]}", tenant=self.tenant, agent=agent,
            partition=self.partition_of(agent),
        ) as current:  # fmt: skip
            answer = await self._call_traced(
                method, agent, path, params, body, content_type, headers
            )
            version = answer.headers.get("ETag")
            if version:
                current.set_attribute("agentmem.version", version.strip('"'))
            current.set_attribute("agentmem.code", answer.status)
            return answer

    async def _call_traced(
        self,
        method: str,
        agent: str,
        path: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
    ) -> _Answer:
        deadline = time.monotonic() + self.timeout
        named: tuple[str, int] | None = None
        problem: AgentmemError | None = None
        for attempt in range(1000):
            base, epoch = self._target(agent)
            if named is not None and (epoch is None or named[1] > epoch):
                base, epoch = f"{self._scheme}://{named[0]}", named[1]
                if self.routing == "router":
                    base, epoch = self.url, None
            try:
                answer = await self._send(method, base + path, params, body, content_type,
                                          headers, epoch, deadline)  # fmt: skip
            except aiohttp.ClientConnectorError as exc:
                problem = UnavailableError("unreachable", f"cannot connect to {base}: {exc}")
                if base != self.url and self.routing == "auto":
                    self._unreachable[base.split("://", 1)[-1]] = (
                        time.monotonic() + UNREACHABLE_SECONDS
                    )
                    named = None
                    continue  # through the router/seed at once
                await self._refresh_directory()
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                # Sent, maybe not answered: safe to retry (reads, and writes carry an id).
                problem = UnavailableError("no_answer", f"{base} did not answer: {exc}")
            else:
                self._note_answer(agent, answer.headers)
                if self._newer_epoch(answer.headers):
                    # The node follows a newer directory (it may still serve a partition
                    # it is handing off): learn where everything is now.
                    await self._refresh_directory(force=True, source=base)
                if answer.status == 307:
                    named = _redirect(answer)
                    await self._refresh_directory(force=True, source=base)
                    problem = UnavailableError("moving", "the agent's shard is moving")
                    if attempt < 2:
                        continue
                elif answer.status == 421:
                    await self._refresh_directory(force=True)
                    problem = UnavailableError("stale_node", "the shard has not caught up yet")
                    named = self._previous_owner(agent)
                elif answer.status in RETRYABLE:
                    problem = error_for(answer.status, _json_or_none(answer.body))
                    retry_after = answer.headers.get("Retry-After")
                    if retry_after and retry_after.isdigit():
                        await self._pause(min(float(retry_after), 0.5), deadline)
                else:
                    return answer
            if time.monotonic() >= deadline:
                break
            await self._pause(min(1.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.0), deadline)
        assert problem is not None
        raise UnavailableError(
            problem.code,
            f"{problem.message} (gave up after {self.timeout:.0f} s; a write may be retried "
            "with the same request_id)",
            problem.status,
            problem.details,
        )

    def _previous_owner(self, agent: str) -> tuple[str, int] | None:
        previous = self._previous
        if previous is None:
            return None
        owner = previous.owner(partition_for(self.tenant, agent, previous.partitions))
        return owner.endpoint, previous.epoch

    async def _call_base(
        self, method: str, base: str, path: str, body: bytes | None = None
    ) -> _Answer:
        """A request to one node or router (not about one agent), retried until the deadline."""
        self._ensure_session()
        deadline = time.monotonic() + self.timeout
        problem = "no answer"
        for attempt in range(1000):
            epoch = self._directory.epoch if self._directory and base != self.url else None
            try:
                content_type = "application/json" if body is not None else None
                answer = await self._send(method, base + path, None, body, content_type, None,
                                          epoch, deadline)  # fmt: skip
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                problem = f"{base} did not answer: {exc}"
            else:
                if answer.status not in RETRYABLE and answer.status != 421:
                    return answer
                problem = f"{base} answered {answer.status}"
            if time.monotonic() >= deadline:
                break
            await self._pause(min(1.0, 0.02 * 2**attempt), deadline)
        raise UnavailableError("unavailable", f"{problem}; retry")

    async def _send(
        self,
        method: str,
        url: str,
        params: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
        epoch: int | None,
        deadline: float,
    ) -> _Answer:
        session = self._ensure_session()
        sent = self._headers(headers)
        tracing.inject(sent)  # nothing unless the application traces
        if content_type is not None:
            sent["Content-Type"] = content_type
        if epoch is not None:
            sent["X-Agentmem-Epoch"] = str(epoch)
        remaining = max(0.05, deadline - time.monotonic())
        if remaining >= self.timeout - 0.5:
            timeout = self._first_try_timeout  # the common case: one object for all
        else:
            timeout = aiohttp.ClientTimeout(total=remaining, sock_connect=min(5.0, remaining))
        if params:
            # Every value the SDK sends is in the API's URL-safe alphabet.
            url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        async with session.request(
            method, URL(url, encoded=True), data=body, headers=sent, allow_redirects=False,
            timeout=timeout,
        ) as resp:  # fmt: skip
            data = await resp.read()
            return _Answer(resp.status, resp.headers, data)

    @staticmethod
    async def _pause(seconds: float, deadline: float) -> None:
        await asyncio.sleep(max(0.0, min(seconds, deadline - time.monotonic())))

    async def _stream(
        self, agent: str, suffix: str, params: Mapping[str, str]
    ) -> AsyncIterator[tuple[str, Any]]:
        """Server-sent events of an agent's stream, after routing like ``_call``."""
        session = self._ensure_session()
        if self._directory is None:
            await self._refresh_directory()
        base, epoch = self._target(agent)
        headers = self._headers()
        if epoch is not None:
            headers["X-Agentmem-Epoch"] = str(epoch)
        target = URL(f"{base}/v1/tenants/{self.tenant}/agents/{agent}/{suffix}", encoded=True)
        async with session.get(
            target.update_query(params), headers=headers, allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60),
        ) as resp:  # fmt: skip
            self._note_answer(agent, resp.headers)
            if resp.status == 307:
                await self._refresh_directory(force=True, source=base)
                raise UnavailableError("moving", "the agent's shard moved; following it")
            if resp.status != 200:
                raise error_for(resp.status, _json_or_none(await resp.read()))
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    event, data = _sse(raw.decode("utf-8"))
                    if event is not None:
                        yield event, data
        raise UnavailableError("stream_ended", "the stream ended; resuming")


#: A write with its text and/or vector (the node's API, docs/semantic.md).
MEMORY = "application/vnd.agentmem.memory+json"


def _path(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else os.fspath(value)


class BearerToken:
    """The ``Authorization`` header of a token, or of a token file (reread when it changes)."""

    #: How often the file's modification time is looked at.
    CHECK_SECONDS = 1.0

    def __init__(self, token: str | None, token_file: str | os.PathLike[str] | None) -> None:
        if token is None and token_file is None:
            token = os.environ.get("AGENTMEM_TOKEN") or None
            token_file = os.environ.get("AGENTMEM_TOKEN_FILE") or None
        if token is not None and token_file is not None:
            raise ValueError("give token or token_file, not both")
        self.path = os.fspath(token_file) if token_file is not None else None
        self._value = f"Bearer {token.strip()}" if token else None
        self._mtime = 0.0
        self._checked = 0.0
        if token_file is not None:
            self._read()

    def _read(self) -> None:
        assert self.path is not None
        try:
            mtime = os.stat(self.path).st_mtime
            if mtime != self._mtime:
                with open(self.path, encoding="utf-8") as f:
                    self._value = f"Bearer {f.read().strip()}"
                self._mtime = mtime
        except OSError as exc:
            if self._value is None:
                raise ValueError(f"cannot read the token file {self.path}: {exc}") from exc
            # keep the token we have: a projected volume is swapped atomically

    def header(self) -> str | None:
        if self.path is not None:
            now = time.monotonic()
            if now - self._checked >= self.CHECK_SECONDS:
                self._checked = now
                self._read()
        return self._value


def _checked(check: Callable[[str], str], value: str) -> str:
    """A name checked here, before anything is sent (the API's own rules)."""
    try:
        return check(value)
    except InvalidNameError as exc:
        raise InvalidRequestError("invalid_name", str(exc), 400) from None


def _sse(raw: str) -> tuple[str | None, Any]:
    event, data = None, []
    for line in raw.split("\n"):
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
    if event is None or not data:
        return None, None
    return event, json.loads("\n".join(data))


def _redirect(answer: _Answer) -> tuple[str, int] | None:
    try:
        info = answer.json()
        return str(info["owner"]["endpoint"]), int(info["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


def _json_or_none(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _item(data: Mapping[str, Any]) -> Item:
    return Item(
        tenant=str(data["tenant"]),
        agent=str(data["agent"]),
        key=str(data["key"]),
        value=data["value"],
        version=str(data["version"]),
        expires_at=data.get("expires_at"),
    )


def _memory(
    value: Any,
    content_type: str,
    text: str | None,
    vector: Sequence[float] | None,
    embed: Sequence[str] | None,
) -> tuple[bytes, str, dict[str, str]]:
    """The body, content type and query of a write, with what it is to be found by."""
    params = {"embed": ",".join(embed)} if embed else {}
    if text is None and vector is None:
        return _dump(value), content_type, params
    memory: dict[str, Any] = {"value": value}
    if text is not None:
        memory["text"] = text
    if vector is not None:
        memory["vector"] = [float(x) for x in vector]
    return _dump(memory), MEMORY, params


def _dump(value: Any) -> bytes:
    try:
        return json.dumps(value, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError("invalid_json", f"the value is not JSON: {exc}") from None


async def gather_limited(coros: Iterable[Awaitable[T]], limit: int = 32) -> list[T]:
    """Await many coroutines, at most ``limit`` at a time, in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with semaphore:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))
