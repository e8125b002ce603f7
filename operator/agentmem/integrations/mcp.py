"""``agentmem mcp``: memory tools for any MCP client, scoped to one tenant and agent.

Tools: ``memory_get``, ``memory_put``, ``memory_patch``, ``memory_delete``,
``memory_keys``, ``memory_update_if`` (a conditional put), ``memory_history``,
and, on a cluster with semantic memory, ``memory_remember`` (a note found by
its meaning) and ``memory_search`` (the agent's memories closest to a query,
including what it just wrote). Every tool works on the one agent the server was started
for (``--tenant``, ``--agent``): a model cannot reach another agent's memory
through it. Served over stdio (the default) or streamable HTTP
(``--transport http``), with the MCP SDK's FastMCP.

Example (stdio, as an MCP client's server entry)::

    agentmem mcp --url http://127.0.0.1:7070 --tenant acme --agent bot-1
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError

from agentmem.client import AgentmemError, AsyncMemory


def build_server(
    url: str,
    tenant: str,
    agent: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token_file: str | None = None,
) -> FastMCP[Any]:
    """An MCP server whose tools read and write one agent's memory.

    The cluster's token comes from ``token_file`` (or ``AGENTMEM_TOKEN`` /
    ``AGENTMEM_TOKEN_FILE``); its subject is the actor of every change.
    """
    client: dict[str, AsyncMemory] = {}

    @asynccontextmanager
    async def lifespan(server: FastMCP[Any]) -> AsyncIterator[None]:
        async with AsyncMemory(url, tenant=tenant, token_file=token_file) as memory:
            client["memory"] = memory
            yield
            client.clear()

    server: FastMCP[Any] = FastMCP(
        name="agentmem",
        instructions=(
            f"Shared memory of agent {agent!r} (tenant {tenant!r}). Values are JSON. Other "
            "agents may change keys concurrently: use memory_update_if with the version you "
            "read to change a value only if nobody else did."
        ),
        host=host,
        port=port,
        lifespan=lifespan,
    )

    def mem() -> AsyncMemory:
        return client["memory"]

    async def guarded(call: Any) -> Any:
        try:
            return await call
        except AgentmemError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None

    @server.tool()
    async def memory_get(key: str) -> dict[str, Any]:
        """Read a key. Returns {"found": false} or {"found": true, "value", "version"}."""
        item = await guarded(mem().get(agent, key))
        if item is None:
            return {"found": False, "key": key}
        return {"found": True, "key": key, "value": item.value, "version": item.version}

    @server.tool()
    async def memory_put(key: str, value: Any, ttl_seconds: int | None = None) -> dict[str, Any]:
        """Set a key to a JSON value (optionally expiring after ttl_seconds)."""
        written = await guarded(mem().put(agent, key, value, ttl=ttl_seconds))
        return {"key": key, "version": written.version}

    @server.tool()
    async def memory_remember(
        key: str, text: str, value: Any = None, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """Remember a text (with an optional JSON value; default {"text": text}) so that
        memory_search finds it by meaning."""
        stored = {"text": text} if value is None else value
        written = await guarded(mem().put(agent, key, stored, ttl=ttl_seconds, text=text))
        return {"key": key, "version": written.version}

    @server.tool()
    async def memory_search(query: str, k: int = 5) -> list[dict[str, Any]]:
        """The k memories of this agent closest in meaning to the query, best first:
        key, value, the text it was found by, score (higher is closer, except for L2)."""
        hits = await guarded(mem().search(query, agent=agent, k=k))
        return [
            {"key": h.key, "value": h.value, "text": h.text, "score": h.score,
             "version": h.version}
            for h in hits
        ]  # fmt: skip

    @server.tool()
    async def memory_patch(key: str, patch: dict[str, Any]) -> dict[str, Any]:
        """Merge a JSON object into a key's value (RFC 7396: null removes a member)."""
        written = await guarded(mem().patch(agent, key, patch))
        return {"key": key, "version": written.version}

    @server.tool()
    async def memory_update_if(key: str, value: Any, version: str | None = None) -> dict[str, Any]:
        """Set a key only if it is still at `version` (from memory_get), or absent when
        `version` is null. Returns {"ok": false, "current_version"} when it changed."""
        try:
            if version is None:
                written = await mem().put(agent, key, value, if_absent=True)
            else:
                written = await mem().put(agent, key, value, if_version=version)
        except AgentmemError as exc:
            if exc.code == "conflict":
                return {"ok": False, "current_version": exc.details.get("current_version")}
            raise ToolError(f"{exc.code}: {exc.message}") from None
        return {"ok": True, "version": written.version}

    @server.tool()
    async def memory_delete(key: str) -> dict[str, Any]:
        """Delete a key."""
        written = await guarded(mem().delete(agent, key))
        return {"key": key, "version": written.version}

    @server.tool()
    async def memory_keys() -> list[str]:
        """The agent's keys."""
        keys: list[str] = await guarded(mem().keys(agent))
        return keys

    @server.tool()
    async def memory_history(limit: int = 50) -> list[dict[str, Any]]:
        """The agent's most recent changes (oldest first), with who made them."""
        changes: list[dict[str, Any]] = []
        try:
            async for change in mem().history(agent, page_size=500):
                changes.append({"version": change.version, "op": change.op, "key": change.key,
                                "value": change.value, "actor": change.actor,
                                "outcome": change.outcome})  # fmt: skip
        except AgentmemError as exc:
            raise ToolError(f"{exc.code}: {exc.message}") from None
        return changes[-max(1, min(limit, 1000)) :]

    return server


def run(
    url: str,
    tenant: str,
    agent: str,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8765,
    token_file: str | None = None,
) -> int:
    server = build_server(url, tenant, agent, host=host, port=port, token_file=token_file)
    server.run("stdio" if transport == "stdio" else "streamable-http")
    return 0
