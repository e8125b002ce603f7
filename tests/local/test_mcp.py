"""``agentmem mcp`` with the MCP SDK's own client, over stdio and streamable HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from typing import Any

import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from agentmem.client import Memory
from agentmem.local import LocalCluster
from tests.net import free_port_run


def _data(result: Any) -> Any:
    assert not result.isError, result.content
    if result.structuredContent is not None:
        content = result.structuredContent
        return content.get("result", content)
    return json.loads(result.content[0].text)


async def _exercise(session: ClientSession, tenant: str, up: LocalCluster) -> None:
    await session.initialize()
    tools = {t.name for t in (await session.list_tools()).tools}
    assert {"memory_get", "memory_put", "memory_patch", "memory_update_if", "memory_delete",
            "memory_keys", "memory_history"} <= tools  # fmt: skip
    assert _data(await session.call_tool("memory_get", {"key": "plan"}))["found"] is False
    put = _data(await session.call_tool("memory_put", {"key": "plan", "value": {"goal": "x"}}))
    await session.call_tool("memory_patch", {"key": "plan", "patch": {"step": 2}})
    got = _data(await session.call_tool("memory_get", {"key": "plan"}))
    assert got["value"] == {"goal": "x", "step": 2}
    stale = _data(await session.call_tool(
        "memory_update_if", {"key": "plan", "value": {}, "version": put["version"]}
    ))  # fmt: skip
    assert stale == {"ok": False, "current_version": got["version"]}
    assert _data(await session.call_tool("memory_keys", {})) == ["plan"]
    history = _data(await session.call_tool("memory_history", {}))
    # The refused conditional write is in the history too, with its outcome.
    assert [(h["op"], h["outcome"]) for h in history] == [
        ("put", "applied"),
        ("merge", "applied"),
        ("put", "conflict"),
    ]
    assert history[0]["actor"] == "developer"  # the subject of the token, not a header
    bad = await session.call_tool("memory_put", {"key": "a b", "value": 1})
    assert bad.isError and "invalid_name" in bad.content[0].text
    # The tools reach only their agent: what they wrote is bot-1's, nobody else's.
    with Memory(up.router_url, tenant=tenant) as mem:
        assert mem.keys("bot-1") == ["plan"]
        assert mem.agents() == ["bot-1"]


def test_mcp_over_stdio(up: LocalCluster) -> None:
    tenant = f"mcp-{uuid.uuid4().hex[:8]}"
    params = StdioServerParameters(
        command=sys.executable,
        # The MCP client starts servers with a minimal environment: the token is a flag.
        args=["-m", "agentmem", "mcp", "--url", up.router_url, "--tenant", tenant,
              "--agent", "bot-1", "--token-file", str(up.token_file)],
    )  # fmt: skip

    async def scenario() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await _exercise(session, tenant, up)

    asyncio.run(scenario())


def test_mcp_over_streamable_http(up: LocalCluster) -> None:
    tenant = f"mcp-{uuid.uuid4().hex[:8]}"
    port = free_port_run(1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentmem", "mcp", "--url", up.router_url, "--tenant", tenant,
         "--agent", "bot-1", "--transport", "http", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        async def scenario() -> None:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with (
                        streamable_http_client(f"http://127.0.0.1:{port}/mcp") as (read, write, _),
                        ClientSession(read, write) as session,
                    ):
                        await _exercise(session, tenant, up)
                        return
                except* (OSError, httpx.ConnectError):
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.3)

        asyncio.run(scenario())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
