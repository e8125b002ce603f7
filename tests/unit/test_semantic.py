"""Semantic memory's pure parts: events with vectors, the embedders, filters,
the configuration, the index writer's choice of rows and the fan-out's merge."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import aiohttp
import pytest

from agentmem.directory import Directory, ShardEntry
from agentmem.eventlog.events import Event
from agentmem.eventlog.ports import LogRecord
from agentmem.node import errors
from agentmem.node.indexer import _newest_by_outcome, _newest_by_state, index_rows
from agentmem.node.searchapi import memory_body, search_request
from agentmem.node.semantic import text_of
from agentmem.runtime.search import merge, missing_partitions, shard_requests
from agentmem.semantic import SemanticConfig, SemanticConfigError
from agentmem.semantic.embed import HashingEmbedder
from agentmem.semantic.filters import FilterError, Scope, expression, matches, parse_filter
from agentmem.semantic.vectors import VectorError, pack, unpack
from agentmem.store.ports import Record


def event(op: str, key: str, value: object = None, vector: list[float] | None = None) -> Event:
    return Event(
        op, "acme", "bot", key, None if value is None else json.dumps(value), None, None, "",  # type: ignore[arg-type]
        "tester", 1, "some text" if vector else None, pack(vector, 2) if vector else None,
    )  # fmt: skip


def record(offset: int, e: Event) -> LogRecord:
    return LogRecord(3, offset, b"", e.encode(), 1000 + offset)


def test_an_event_carries_its_text_and_vector_and_older_events_still_decode() -> None:
    e = event("put", "k", {"a": 1}, [0.25, -1.5])
    back = Event.decode(e.encode())
    assert back == e and unpack(back.vector or "") == [0.25, -1.5]
    plain = event("put", "k", {"a": 1})
    assert b"vector" not in plain.encode() and b"text" not in plain.encode()
    assert Event.decode(plain.encode()).vector is None


def test_vectors_pack_exactly_and_refuse_what_cannot_be_stored() -> None:
    assert unpack(pack([1.0, 0.5, -2.0], 3)) == [1.0, 0.5, -2.0]
    assert len(pack([0.1] * 384, 384)) < 2100  # 2 KiB as base64, not 8 as JSON
    with pytest.raises(VectorError, match="3 dimensions; this cluster's have 4"):
        pack([1.0, 2.0, 3.0], 4)
    with pytest.raises(VectorError, match="finite"):
        pack([1.0, math.nan], 2)


def test_the_hashing_embedder_is_deterministic_unit_length_and_lexical() -> None:
    e = HashingEmbedder(64)
    a, b, c = asyncio.run(
        e.embed(["the battery of the robot", "robot battery low", "craters on mars"])
    )
    assert a == e.embed_one("the battery of the robot")
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-9)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y, strict=True))  # noqa: E731
    assert dot(a, b) > dot(a, c)
    assert e.embed_one("") == [1.0] + [0.0] * 63


def test_filters_become_milvus_expressions_and_are_checked_exactly() -> None:
    conditions = parse_filter({"kind": "fact", "n": {"$gte": 2}, "tags.team": {"$in": ["red"]}})
    expr = expression(Scope("acme", None, "bot", "notes/"), [3, 1], conditions, 99)
    assert expr == (
        'tenant == "acme" and partition in [1, 3] and agent like "bot%" and key like "notes/%" '
        'and (expires_at == 0 or expires_at > 99) and value["kind"] == "fact" and '
        'value["n"] >= 2 and value["tags"]["team"] in ["red"]'
    )
    assert matches({"kind": "fact", "n": 2, "tags": {"team": "red"}}, conditions)
    assert not matches({"kind": "fact", "n": 1, "tags": {"team": "red"}}, conditions)
    assert not matches({"kind": "fact", "n": "2", "tags": {"team": "red"}}, conditions)
    assert not matches({"kind": True}, parse_filter({"kind": 1}))
    # '_' is a LIKE wildcard: narrowed before it, checked exactly on every hit
    assert 'key like "a%"' in expression(Scope("t", key_prefix="a_b"), [0], [], 0)
    assert not Scope("t", key_prefix="a_b").covers("x", "axb")


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("x", "filter is an object"),
        ({"a b": 1}, "filter field 'a b'"),
        ({"a": {"$regex": "x"}}, "filter.a: unknown operator '\\$regex'"),
        ({"a": None}, "filter.a: null"),
        ({"a": 'say "hi"'}, 'no "'),
        ({"a": {"$in": []}}, "filter.a.\\$in: a list of 1 to 100"),
        ({"a": [1]}, "filter.a: compare with a string"),
    ],
)
def test_a_bad_filter_is_refused_with_what_is_wrong(bad: object, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(bad)


def test_the_configuration_names_the_field_that_is_wrong() -> None:
    good = {"uri": "http://milvus:19530", "dimensions": 384}
    config = SemanticConfig.from_dict(good)
    assert config.metric == "COSINE" and config.index_type == "HNSW"
    assert config.index_params == {"M": 16, "efConstruction": 200}
    for change, field in [
        ({"uri": "milvus"}, "semantic.uri"),
        ({"dimensions": 1}, "semantic.dimensions"),
        ({"metric": "HAMMING"}, "semantic.metric"),
        ({"index": {"type": "DISKANN"}}, "semantic.index.type"),
        ({"collection": "1abc"}, "semantic.collection"),
        ({"embedder": {"kind": "openai"}}, "semantic.embedder.url"),
        ({"embedder": {"kind": "magic"}}, "semantic.embedder.kind"),
    ]:
        with pytest.raises(SemanticConfigError, match=field.replace(".", "\\.")):
            SemanticConfig.from_dict({**good, **change})
    assert SemanticConfig.from_json("") is None


def test_the_index_keeps_each_keys_newest_applied_event_only() -> None:
    records = [
        record(10, event("put", "a", {"v": 1}, [1.0, 0.0])),
        record(11, event("put", "a", {"v": 2}, [0.0, 1.0])),  # a conflict: not applied
        record(12, event("put", "b", {"v": 1}, [1.0, 1.0])),
        record(13, event("delete", "b")),
        record(14, event("put", "c", {"v": 1})),  # no vector: c leaves the index
        record(15, event("put", "d", {"v": 1}, [1.0, 1.0])),  # a duplicate
    ]
    codes = ["a:10", "c:10", "a:12", "a:13", "a:14", "da:9"]
    newest = _newest_by_outcome(records, codes)
    assert {p: o for p, (o, _) in newest.items()} == {
        "acme/bot/a": 10, "acme/bot/b": 13, "acme/bot/c": 14,
    }  # fmt: skip
    rows = index_rows(3, newest, 1000)
    assert [(r.key, r.version, r.vector, r.value) for r in rows] == [
        ("a", 10, [1.0, 0.0], {"v": 1})
    ]


def test_events_read_again_ask_the_state_which_version_is_current() -> None:
    records = [
        record(20, event("put", "a", {"v": 1}, [1.0, 0.0])),
        record(21, event("put", "a", {"v": 2}, [0.0, 1.0])),
        record(22, event("put", "b", {"v": 1}, [1.0, 1.0])),
        record(23, event("put", "c", {"v": 1}, [1.0, 1.0])),
    ]
    current = {
        "acme/bot/a": Record('{"v":1}', 20, None, 0),  # 21 lost its condition
        "acme/bot/b": None,  # deleted later (or expired)
        "acme/bot/c": Record('{"v":9}', 40, None, 0),  # a later range holds its version
    }
    newest = _newest_by_state(records, lambda paths: [current[p] for p in paths])
    assert {p: (o, e is not None) for p, (o, e) in newest.items()} == {
        "acme/bot/a": (20, True), "acme/bot/b": (23, False),
    }  # fmt: skip


def test_a_memory_body_and_embed_fields() -> None:
    value, embedding = memory_body('{"value": {"n": 1.50}, "text": "hi", "vector": [1, 2]}', ())
    assert value == '{"n":1.5}' and embedding.text == "hi" and embedding.vector == [1.0, 2.0]
    with pytest.raises(errors.InvalidRequest, match="unknown member"):
        memory_body('{"value": 1, "txt": "x"}', ())
    with pytest.raises(errors.InvalidRequest, match="send text, a vector"):
        memory_body('{"value": 1}', ())
    assert text_of({"a": "one", "b": {"c": 2}, "d": None}, ["a", "b.c", "d", "e"]) == "one\n\n2"
    assert text_of({"a": 1}, ["x"]) is None


def test_a_search_body_is_checked_before_anything_waits() -> None:
    req = search_request(
        {"query": "q", "k": 3, "min_versions": {"2": 7}, "partitions": [1, 2]},
        "acme", None, 4, "session", None,
    )  # fmt: skip
    assert req.k == 3 and req.min_versions == {2: 7} and req.partitions == frozenset({1, 2})
    for body, code in [
        ({}, "invalid_search"),
        ({"query": "q", "vector": [1.0]}, "invalid_search"),
        ({"query": "q", "k": 0}, "invalid_k"),
        ({"query": "q", "filter": {"a": {"$x": 1}}}, "invalid_filter"),
        ({"query": "q", "consistency": "now"}, "invalid_consistency"),
        ({"query": "q", "min_versions": {"9": 1}}, "invalid_version"),
        ({"query": "q", "agent_prefix": "a b"}, "invalid_name"),
        ({"query": "q", "bogus": 1}, "invalid_search"),
    ]:
        with pytest.raises(errors.InvalidRequest) as caught:
            search_request(body, "acme", None, 4, "session", None)
        assert caught.value.code == code, body


def test_a_tenant_wide_search_asks_each_shard_for_its_partitions_and_merges() -> None:
    shards = tuple(ShardEntry(i, f"s{i}", f"h{i}:1") for i in range(2))
    directory = Directory("c", "ns", "t", 1, (0, 1, 0, 1), shards)
    asks = shard_requests({"query": "q", "k": 2}, directory)
    assert {s: b["partitions"] for s, b in asks.items()} == {0: [0, 2], 1: [1, 3]}
    assert list(shard_requests({"partitions": [3]}, directory)) == [1]

    def item(key: str, score: float, version: str = "0:1") -> dict[str, object]:
        return {"agent": "a", "key": key, "score": score, "version": version}

    answers = [{"items": [item("x", 0.9), item("y", 0.5)]}, {"items": [item("z", 0.7)]}]
    assert [i["key"] for i in merge(answers, 2, "COSINE")] == ["x", "z"]
    assert [i["key"] for i in merge(answers, 2, "L2")] == ["y", "z"]
    # the same key from two answers (a hand-off): the newer version wins
    twice = [{"items": [item("x", 0.9, "0:1")]}, {"items": [item("x", 0.1, "0:5")]}]
    assert merge(twice, 5, "COSINE")[0]["version"] == "0:5"
    assert missing_partitions(asks, [1]) == [0, 2]


def test_a_cluster_without_semantic_memory_says_so_and_writes_nothing(tmp_path: Path) -> None:
    from tests.unit.test_limits import serve, token

    async def scenario() -> None:
        async with serve(tmp_path, {}) as base, aiohttp.ClientSession(headers=token("t")) as s:
            keys = f"{base}/v1/tenants/acme/agents/bot/keys"
            async with s.put(f"{keys}/k", params={"embed": "text"}, json={"text": "x"}) as r:
                assert r.status == 400 and (await r.json())["error"] == "semantic_off"
            memory = {"value": 1, "text": "x"}
            async with s.put(
                f"{keys}/k", data=json.dumps(memory),
                headers={"Content-Type": "application/vnd.agentmem.memory+json"},
            ) as r:  # fmt: skip
                assert r.status == 400 and (await r.json())["error"] == "semantic_off"
            async with s.get(f"{keys}/k") as r:
                assert r.status == 404  # nothing was written
            for path in ("/v1/tenants/acme/agents/bot/search", "/v1/tenants/acme/search"):
                async with s.post(f"{base}{path}", json={"query": "x"}) as r:
                    body = await r.json()
                    assert (r.status, body["error"]) == (404, "semantic_off"), body
                    assert "spec.semantic" in body["message"]

    asyncio.run(scenario())
