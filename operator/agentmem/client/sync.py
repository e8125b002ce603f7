"""``Memory``: the blocking client, a thin wrapper that runs :class:`AsyncMemory`
on an event loop of its own (one background thread per client).

Example::

    with Memory("http://127.0.0.1:7070", tenant="acme") as mem:
        mem.put("bot-1", "plan", {"goal": "explore"})
        print(mem.get("bot-1", "plan").value)
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from agentmem.client.aio import AsyncMemory, Consistency, Routing
from agentmem.client.types import Change, Hit, Item, Written
from agentmem.directory import Directory

T = TypeVar("T")


class Memory:
    """The blocking twin of :class:`AsyncMemory`: same arguments, same methods."""

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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="agentmem-client", daemon=True
        )
        self._thread.start()
        self._async = AsyncMemory(
            url, tenant=tenant, routing=routing, zone=zone, consistency=consistency,
            timeout=timeout, token=token, token_file=token_file, tls_ca=tls_ca, tls_cert=tls_cert,
            tls_key=tls_key, max_connections=max_connections,
            headers=headers,
        )  # fmt: skip
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this Memory is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    @property
    def aio(self) -> AsyncMemory:
        """The :class:`AsyncMemory` underneath, bound to this client's own loop."""
        return self._async

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine that uses :attr:`aio` on the client's loop; block for its result."""
        return self._run(coro)

    async def run_async(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine that uses :attr:`aio`, from any event loop."""
        if self._closed:
            coro.close()
            raise RuntimeError("this Memory is closed")
        try:
            if asyncio.get_running_loop() is self._loop:
                return await coro
        except RuntimeError:
            pass
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self._loop))

    def __enter__(self) -> Memory:
        self._run(self._async.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and stop the client's thread."""
        if self._closed:
            return
        self._run(self._async.aclose())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    @property
    def tenant(self) -> str:
        return self._async.tenant

    @property
    def directory(self) -> Directory | None:
        return self._async.directory

    @property
    def tokens(self) -> dict[int, int]:
        return self._async.tokens

    def get(self, agent: str, key: str, *, consistency: Consistency | None = None) -> Item | None:
        return self._run(self._async.get(agent, key, consistency=consistency))

    def get_many(
        self, agent: str, keys: Sequence[str], *, consistency: Consistency | None = None
    ) -> dict[str, Item | None]:
        return self._run(self._async.get_many(agent, keys, consistency=consistency))

    def keys(self, agent: str, *, consistency: Consistency | None = None) -> list[str]:
        return self._run(self._async.keys(agent, consistency=consistency))

    def put(
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
        return self._run(
            self._async.put(
                agent, key, value, ttl=ttl, if_version=if_version, if_absent=if_absent,
                request_id=request_id, text=text, vector=vector, embed=embed,
            )
        )  # fmt: skip

    def patch(
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
        return self._run(
            self._async.patch(
                agent, key, patch, ttl=ttl, if_version=if_version, request_id=request_id,
                text=text, vector=vector, embed=embed,
            )
        )  # fmt: skip

    def delete(
        self,
        agent: str,
        key: str,
        *,
        if_version: str | None = None,
        request_id: str | None = None,
    ) -> Written:
        return self._run(
            self._async.delete(agent, key, if_version=if_version, request_id=request_id)
        )

    def update(
        self,
        agent: str,
        key: str,
        fn: Callable[[Any], Any],
        *,
        ttl: int | None = None,
        attempts: int = 1000,
    ) -> tuple[Any, Written]:
        return self._run(self._async.update(agent, key, fn, ttl=ttl, attempts=attempts))

    def agents(self) -> list[str]:
        return self._run(self._async.agents())

    def search(
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
        """See :meth:`AsyncMemory.search`."""
        return self._run(
            self._async.search(
                query, vector=vector, agent=agent, k=k, filter=filter, key_prefix=key_prefix,
                agent_prefix=agent_prefix, consistency=consistency, allow_partial=allow_partial,
            )
        )  # fmt: skip

    def history(
        self, agent: str, *, after: str | None = None, page_size: int = 500
    ) -> Iterator[Change]:
        return self._iterate(self._async.history(agent, after=after, page_size=page_size))

    def watch(self, agent: str, *, after: str | None = None) -> Iterator[Change]:
        """Blocks between changes; break out of the loop to stop watching."""
        return self._iterate(self._async.watch(agent, after=after))

    def _iterate(self, stream: Any) -> Iterator[Change]:
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(stream.aclose())
