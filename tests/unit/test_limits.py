"""Quotas per tenant and bounds per client, on a node's HTTP API in process
(embedded log and store, state in memory)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from agentmem.client import AsyncMemory, OverLimitError
from agentmem.node.http import create_app
from agentmem.node.limits import Quotas
from agentmem.runtime.auth import AuthConfig, SigningKey, Verifier, issuer_entry
from tests.unit.test_node_embedded import embedded_node, ready

AUD = "agentmem.io/default/agentmem"
KEY = SigningKey.generate()


def token(subject: str, tenant: str = "*") -> dict[str, str]:
    minted = KEY.mint("test", AUD, subject, tenant=tenant, scopes=["read", "write"])
    return {"Authorization": f"Bearer {minted}"}


@asynccontextmanager
async def serve(tmp_path: Path, quotas: dict[str, Any]) -> AsyncIterator[str]:
    node = embedded_node(tmp_path)
    await node.start()
    verifier = Verifier.from_config(
        AuthConfig.from_dict({"audience": AUD, "issuers": [issuer_entry("test", [KEY])]})
    )
    server = TestServer(create_app(node, verifier, Quotas.from_json(json.dumps(quotas))))
    await server.start_server()
    try:
        await ready(node)
        yield str(server.make_url("")).rstrip("/")
    finally:
        node.watchers.close()  # ends the watch streams, so the server stops at once
        await server.close()
        await node.stop()


def test_a_tenant_over_its_write_rate_gets_429_and_nothing_is_logged(tmp_path: Path) -> None:
    async def scenario() -> None:
        quotas = {"default": {"writesPerSecond": 5, "burst": 5}}
        async with serve(tmp_path, quotas) as base, aiohttp.ClientSession() as s:
            url = f"{base}/v1/tenants/acme/agents/bot/keys/k"
            statuses = []
            for i in range(7):
                async with s.put(url, json=i, headers=token("bot")) as r:
                    statuses.append(r.status)
                    if r.status == 429:
                        body = await r.json()
                        assert body["error"] == "write_rate_exceeded"
                        assert "acme" in body["message"] and "5/s" in body["message"]
                        assert int(r.headers["Retry-After"]) >= 1
            assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
            # Another tenant has its own bucket.
            other = f"{base}/v1/tenants/globex/agents/bot/keys/k"
            async with s.put(other, json=1, headers=token("bot")) as r:
                assert r.status == 200
            async with s.get(
                f"{base}/v1/tenants/acme/agents/bot/history", headers=token("bot")
            ) as r:
                events = (await r.json())["events"]
            assert len(events) == statuses.count(200)  # refused writes never reach the log
            await asyncio.sleep(0.5)  # the bucket refills at 5/s
            async with s.put(url, json=9, headers=token("bot")) as r:
                assert r.status == 200
            # The SDK raises a typed error that says when to come back.
            bearer = token("sdk")["Authorization"].split()[1]
            async with AsyncMemory(base, tenant="acme", token=bearer) as mem:
                with pytest.raises(OverLimitError) as over:
                    for i in range(20):
                        await mem.put("bot", "k", i)
                assert over.value.status == 429 and over.value.retry_after is not None

    asyncio.run(scenario())


async def _open_watch(
    s: aiohttp.ClientSession, base: str, who: str, tenant: str = "acme"
) -> aiohttp.ClientResponse:
    # Headers come back once the stream is open (and held) on the node.
    return await s.get(f"{base}/v1/tenants/{tenant}/agents/bot/watch", headers=token(who))


def test_watchers_are_bounded_per_tenant_and_per_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        quotas = {"tenants": {"acme": {"watchers": 3}}, "client": {"watchers": 2}}
        async with serve(tmp_path, quotas) as base, aiohttp.ClientSession() as s:
            held = [await _open_watch(s, base, "a"), await _open_watch(s, base, "a")]
            assert [r.status for r in held] == [200, 200]
            third = await _open_watch(s, base, "a")  # the client's bound
            body = await third.json()
            assert third.status == 429 and body["error"] == "too_many_watchers", body
            assert "client 'a'" in body["message"], body
            held.append(await _open_watch(s, base, "b"))
            assert held[-1].status == 200
            fourth = await _open_watch(s, base, "c")  # the tenant's quota
            body = await fourth.json()
            assert fourth.status == 429 and "tenant 'acme'" in body["message"], body
            held.append(await _open_watch(s, base, "c", tenant="globex"))
            assert held[-1].status == 200
            held[0].close()  # a stream ends: its place is free again
            await asyncio.sleep(0.3)
            again = await _open_watch(s, base, "c")
            assert again.status == 200
            for r in [*held, again]:
                r.close()

    asyncio.run(scenario())


def test_quotas_name_what_is_wrong() -> None:
    for bad, where in (
        ('{"default": {"writesPerSecond": -1}}', "quotas.default"),
        ('{"tenants": {"acme": {"watchers": "x"}}}', "quotas.tenants.acme"),
        ("{", "not JSON"),
    ):
        try:
            Quotas.from_json(bad)
        except ValueError as exc:
            assert where in str(exc)
        else:
            raise AssertionError(bad)


def test_a_tenant_over_its_stored_bytes_writes_again_once_it_deletes(tmp_path: Path) -> None:
    async def scenario() -> None:
        quotas = {"tenants": {"acme": {"storedBytes": 1000}}, "usageIntervalSeconds": 0.2}
        async with serve(tmp_path, quotas) as base, aiohttp.ClientSession() as s:

            def url(tenant: str, key: str) -> str:
                return f"{base}/v1/tenants/{tenant}/agents/bot/keys/{key}"

            async def put(tenant: str, key: str) -> tuple[int, dict[str, Any]]:
                async with s.put(url(tenant, key), json="x" * 600, headers=token("bot")) as r:
                    return r.status, await r.json()

            assert (await put("acme", "a"))[0] == 200
            assert (await put("acme", "b"))[0] == 200  # not counted yet: at most one interval
            deadline = asyncio.get_running_loop().time() + 20
            while True:  # the write-behind reaches the store, then the count sees it
                status, body = await put("acme", "c")
                if status == 429:
                    break
                assert asyncio.get_running_loop().time() < deadline, body
                await asyncio.sleep(0.2)
            assert body["error"] == "stored_bytes_exceeded" and "1000" in body["message"], body
            assert (await put("globex", "a"))[0] == 200  # another tenant, no quota
            for key in ("a", "b", "c"):  # deletes are always let through
                async with s.delete(url("acme", key), headers=token("bot")) as r:
                    assert r.status == 200
            while (await put("acme", "d"))[0] == 429:
                assert asyncio.get_running_loop().time() < deadline + 20
                await asyncio.sleep(0.2)

    asyncio.run(scenario())
