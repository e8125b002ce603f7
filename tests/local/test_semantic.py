"""Semantic memory on a local cluster: ``agentmem up --semantic`` (three shards,
a router, Milvus Lite as its own process), through the SDK and raw HTTP.

What could break is forced here: Milvus stopped while writes go on, a node
restarted while the index is behind (so it reads events again and asks its
state which version is current), a shard down during a tenant-wide search.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from agentmem.client import AsyncMemory, ForbiddenError, IncompleteError, Memory, UnavailableError
from agentmem.directory import partition_for
from agentmem.integrations.langgraph import AgentmemStore
from agentmem.local import LocalCluster
from agentmem.semantic.embed import HashingEmbedder
from tests.local.conftest import start_cluster
from tests.net import free_port

DIMENSIONS = 64


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_cluster(
        tmp_path_factory.mktemp("semantic"), semantic=True, dimensions=DIMENSIONS,
        milvus_lite_port=free_port(),
    )  # fmt: skip
    yield c
    c.stop()


def memory(c: LocalCluster, tenant: str, **options: Any) -> Memory:
    options.setdefault("timeout", 20)
    return Memory(c.router_url, tenant=tenant, token_file=str(c.token_file), **options)


def note(text: str, **fields: Any) -> dict[str, Any]:
    return {"text": text, **fields}


def request(c: LocalCluster, method: str, path: str, body: Any, **headers: str) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    token = c.token_file.read_text().strip()
    req = urllib.request.Request(
        f"{c.router_url}{path}", data=data, method=method,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}", **headers},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def stop_process(c: LocalCluster, name: str) -> None:
    process = c.processes.pop(name)
    process.send_signal(signal.SIGKILL)
    process.wait(30)


def test_a_search_finds_what_the_agent_just_wrote_and_only_its_current_version(
    cluster: LocalCluster,
) -> None:
    with memory(cluster, "ryw") as m:
        for i in range(20):
            m.put("rover", f"n{i}", note(f"filler note {i} about rocks"), embed=["text"])
        m.put("rover", "dock", note("the battery charges at dock three"), embed=["text"])
        # session consistency: no sleep, the search waits for the index to have it
        hits = m.search("battery dock", agent="rover", k=3)
        assert hits[0].key == "dock" and hits[0].text == "the battery charges at dock three"
        assert hits[0].value == note("the battery charges at dock three")

        m.put("rover", "dock", note("the dock moved to the north crater"), embed=["text"])
        hits = m.search("battery dock", agent="rover", k=25)
        dock = [h for h in hits if h.key == "dock"]
        assert len(dock) == 1 and dock[0].text == "the dock moved to the north crater"

        # a write without an embedding leaves the index; a delete too
        m.put("rover", "n0", {"plain": True})
        m.delete("rover", "n1")
        keys = {h.key for h in m.search("filler note rocks", agent="rover", k=50)}
        assert "n0" not in keys and "n1" not in keys and "n2" in keys

        # expiry by time: gone from results at once, whatever the index still holds
        m.put("rover", "short", note("ephemeral battery reading"), embed=["text"], ttl=1)
        assert m.search("ephemeral battery reading", agent="rover", k=1)[0].key == "short"
        time.sleep(1.5)
        keys = {h.key for h in m.search("ephemeral battery reading", agent="rover", k=50)}
        assert "short" not in keys


def test_caller_vectors_filters_prefixes_and_the_whole_tenant(cluster: LocalCluster) -> None:
    with memory(cluster, "scope") as m, memory(cluster, "scope", routing="router") as via_router:
        for i in range(12):
            agent = f"team-a-{i % 3}" if i < 9 else f"solo-{i}"
            m.put(agent, f"facts/{i}", {"n": i, "kind": "fact" if i % 2 else "plan"},
                  vector=[1.0, float(i)] + [0.0] * (DIMENSIONS - 2))  # fmt: skip
        q = [1.0, 4.0] + [0.0] * (DIMENSIONS - 2)
        for client in (m, via_router):  # the SDK's own fan-out, and the router's
            hits = client.search(vector=q, k=3)
            assert hits[0].value["n"] == 4
            facts = client.search(vector=q, k=20, filter={"kind": "fact", "n": {"$gt": 4}})
            assert sorted(h.value["n"] for h in facts) == [5, 7, 9, 11]
            team = client.search(vector=q, k=20, agent_prefix="team-a-")
            assert {h.agent for h in team} == {"team-a-0", "team-a-1", "team-a-2"}
            mine = client.search(vector=q, k=20, agent="team-a-1", key_prefix="facts/1")
            assert {h.key for h in mine} == {"facts/1"}  # facts/10 belongs to solo-10


def test_a_search_never_returns_another_tenants_memory(cluster: LocalCluster) -> None:
    for tenant in ("blue", "green"):
        with memory(cluster, tenant) as m:
            for i in range(10):
                m.put(
                    f"a{i}", "secret", note(f"the launch code of {tenant} is {i}"), embed=["text"]
                )
    with memory(cluster, "blue") as blue:
        hits = blue.search("the launch code", k=50, consistency="strong")
        assert len(hits) == 10 and {h.tenant for h in hits} == {"blue"}
    token = cluster.mint("green-reader", tenant="green", scopes=("read",))
    with Memory(cluster.router_url, tenant="blue", token=token, timeout=5) as intruder:
        with pytest.raises(ForbiddenError):
            intruder.search("the launch code", k=5)
        with pytest.raises(ForbiddenError):
            intruder.search("the launch code", agent="a1", k=5)


def test_bad_searches_and_writes_get_a_json_4xx_that_says_what_is_wrong(
    cluster: LocalCluster,
) -> None:
    base = "/v1/tenants/bad/agents/a/"
    status, body = request(
        cluster, "POST", base + "search", {"query": "x", "filter": {"n": {"$x": 1}}}
    )
    assert (status, body["error"]) == (400, "invalid_filter") and "$x" in body["message"]
    status, body = request(cluster, "POST", base + "search", {"vector": [1.0, 2.0]})
    assert (status, body["error"]) == (400, "invalid_vector") and "64" in body["message"]
    status, body = request(cluster, "POST", "/v1/tenants/bad/search", {"k": 3})
    assert (status, body["error"]) == (400, "invalid_search")
    status, body = request(
        cluster, "PUT", base + "keys/k", {"value": 1, "vector": [1.0]},
        **{"Content-Type": "application/vnd.agentmem.memory+json"},
    )  # fmt: skip
    assert (status, body["error"]) == (400, "invalid_vector")


def test_milvus_down_loses_no_write_and_a_restarted_node_catches_the_index_up(
    cluster: LocalCluster,
) -> None:
    tenant, agent = "outage", "probe"
    shard = cluster_shard(cluster, tenant, agent)
    with memory(cluster, tenant) as m:
        m.put(agent, "before", note("written before the outage"), embed=["text"])
        m.put(agent, "doomed", note("deleted during the outage"), embed=["text"])
        assert m.search("outage", agent=agent, k=5)
        stop_process(cluster, "milvus")
        # writes are acknowledged: the log decides them, the index follows later
        for i in range(5):
            m.put(agent, f"during-{i}", note(f"written during the outage {i}"), embed=["text"])
        m.delete(agent, "doomed")
        m.put(agent, "before", note("rewritten during the outage"), embed=["text"])
        # a search that must see them says the index is unavailable (a JSON 503)
        with memory(cluster, tenant, timeout=8) as fresh, pytest.raises(UnavailableError) as caught:
            fresh.search("outage", agent=agent, k=5, consistency="strong")
        assert caught.value.code == "index_unavailable", caught.value
        # the shard's node restarts while the index is behind: it rebuilds its state
        # from the store, and the index writer reads the missed events again
        stop_process(cluster, f"node-{shard}")
        cluster.spawn_milvus()
        cluster.spawn_node(shard)
        hits = m.search("written during the outage rewritten", agent=agent, k=10)
        keys = {h.key: h.text for h in hits}
        assert {f"during-{i}" for i in range(5)} <= set(keys)
        assert keys["before"] == "rewritten during the outage" and "doomed" not in keys
    metrics = node_metrics(cluster, shard)
    assert metrics.get("memory_node_index_catch_up_events_total", 0) >= 7


def test_a_tenant_wide_search_with_a_shard_down_says_which_partitions_are_missing(
    cluster: LocalCluster,
) -> None:
    with memory(cluster, "partial") as m:
        for i in range(30):
            m.put(f"agent-{i}", "k", note(f"partial result {i}"), embed=["text"])
        assert len(m.search("partial result", k=30)) == 30
        stop_process(cluster, "node-2")
        try:
            with (
                memory(cluster, "partial", timeout=3) as m3,
                pytest.raises(IncompleteError) as caught,
            ):
                m3.search("partial result", k=30)
            assert caught.value.missing and 0 < len(caught.value.partial) < 30
            status, body = request(
                cluster, "POST", "/v1/tenants/partial/search", {"query": "partial", "k": 30}
            )
            assert status == 200 and body["missing"] and 0 < len(body["items"]) < 30
        finally:
            cluster.spawn_node(2)
            wait_ready(cluster, 2)


def cluster_shard(c: LocalCluster, tenant: str, agent: str) -> int:
    directory = json.loads((c.data / "directory.json").read_text())
    return int(directory["table"][partition_for(tenant, agent, c.partitions)])


def wait_ready(c: LocalCluster, shard: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://{c.host}:{c.node_port(shard)}/readyz", timeout=2)
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"node-{shard} is not ready")


def node_metrics(c: LocalCluster, shard: int) -> dict[str, float]:
    token = c.mint("prometheus", tenant=None, scopes=("metrics",))
    req = urllib.request.Request(
        f"http://{c.host}:{c.node_port(shard)}/metrics",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name.split("{", 1)[0]] = out.get(name.split("{", 1)[0], 0.0) + float(value)
    return out


def test_the_langgraph_store_searches_by_meaning(cluster: LocalCluster) -> None:
    hashing = HashingEmbedder(DIMENSIONS)

    def embed(texts: list[str]) -> list[list[float]]:  # the store's own embedder
        return [hashing.embed_one(t) for t in texts]

    async def scenario() -> None:
        async with AsyncMemory(
            cluster.router_url, tenant="lg", token_file=str(cluster.token_file)
        ) as m:
            # the cluster embeds (index without embed), or the store does (with embed)
            for store in (
                AgentmemStore(m, index={"dims": DIMENSIONS, "fields": ["text"]}),
                AgentmemStore(m, index={"dims": DIMENSIONS, "embed": embed, "fields": ["text"]}),
            ):
                user = f"user-{id(store)}"
                await store.aput((user, "memories"), "food", {"text": "likes pizza with olives"})
                await store.aput((user, "memories"), "pet", {"text": "has a cat named Miso"})
                await store.aput((user, "memories"), "raw", {"text": "not indexed"}, index=False)
                await store.aput((user, "prefs"), "tea", {"text": "drinks green tea", "n": 2})
                found = await store.asearch((user,), query="likes pizza with olives?", limit=2)
                assert found[0].key == "food" and found[0].score is not None
                assert found[0].value == {"text": "likes pizza with olives"}
                scoped = await store.asearch((user, "prefs"), query="pizza", limit=5)
                assert [i.key for i in scoped] == ["tea"]
                everything = await store.asearch((user,), query="not indexed", limit=10)
                assert "raw" not in {i.key for i in everything}
                filtered = await store.asearch((user,), query="tea", filter={"n": 2}, limit=5)
                assert [i.key for i in filtered] == ["tea"]

    asyncio.run(scenario())


def test_the_mcp_server_remembers_and_searches(cluster: LocalCluster) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentmem", "mcp", "--url", cluster.router_url, "--tenant", "mcp",
              "--agent", "bot-1", "--token-file", str(cluster.token_file)],
    )  # fmt: skip

    def data(result: Any) -> Any:
        assert not result.isError, result.content
        content = result.structuredContent
        return content.get("result", content) if content is not None else None

    async def scenario() -> None:
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            for key, text in (("dock", "the charging dock is in bay three"),
                              ("map", "the north map was updated")):  # fmt: skip
                await session.call_tool("memory_remember", {"key": key, "text": text})
            hits = data(
                await session.call_tool("memory_search", {"query": "where to charge", "k": 1})
            )
            assert [h["key"] for h in hits] == ["dock"]
            assert hits[0]["value"] == {"text": "the charging dock is in bay three"}

    asyncio.run(scenario())
