"""The Redis Lua apply script agrees with the Python reference, on real Redis."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentmem.eventlog.events import Event
from agentmem.eventlog.ports import LogRecord
from agentmem.node.apply import MemoryState
from agentmem.node.state.redis import RedisState
from tests.kafka.conftest import RedisServer
from tests.unit.test_apply import T0, event, logs, materialize

EDGE_CASES: list[list[tuple[int, int, bytes]]] = [
    # compare-and-set on a record that expired (by log time) within the batch
    [(0, T0, event(expires_at=T0 + 5)), (1, T0 + 5, event(expect=0, value=2))],
    [(0, T0, event(expires_at=T0 + 5)), (1, T0 + 4, event(expect=0, value=2))],
    [(0, T0, event(expires_at=T0 + 5)), (1, T0 + 6, event(expect="absent"))],
    # delete, then conditions on the absent key
    [(0, T0, event()), (1, T0, event(op="delete")), (2, T0, event(expect=0)),
     (3, T0, event(op="delete", expect="absent"))],
    # duplicates keep the first outcome, across conflicts
    [(0, T0, event(rid="r", expect=7)), (1, T0, event(rid="r")), (2, T0, event(rid="s"))],
    # keys with slashes, several agents, undecodable events, fields of the wrong type
    [(0, T0, event(key="a/b/c")), (1, T0, b"garbage"), (2, T0, event(agent="z", key="a/b")),
     (3, T0, event().replace(b'"tenant":"t"', b'"tenant":null'))],
    # request ids: a ':' in tenant or id must not make two tenants' ids collide
    [(0, T0, Event("put", "a:b", "x", "k", "1", None, None, "c", "", 0).encode()),
     (1, T0, Event("put", "a", "x", "k", "2", None, None, "b:c", "", 0).encode())],
    # ticks move log time on: the expired record and the old request id go
    [(0, T0, event(rid="r", expires_at=T0 + 5)), (1, T0 + 20, Event.tick(0).encode()),
     (2, T0 + 21, event(rid="r", value=3))],
]  # fmt: skip

#: The dedup window of the edge cases and of half the random logs: short, so
#: request ids leave it and come back within a test.
SHORT_WINDOW = 15


def test_lua_script_matches_the_reference_on_edge_cases(
    redis_factory: Callable[..., RedisServer],
) -> None:
    server = redis_factory()
    for case in EDGE_CASES:
        with redis.Redis(port=server.port) as client:
            client.flushall()
        store = RedisState(server.url, SHORT_WINDOW)
        store.claim()
        reference = MemoryState(SHORT_WINDOW)
        expected = reference.apply_batch(3, case)
        assert store.apply(3, [LogRecord(3, o, t, p) for o, t, p in case]) == expected, case
        assert store.snapshot() == reference.snapshot()
        store.close_sync()


@pytest.mark.parametrize("window", [SHORT_WINDOW, 600_000], ids=["short-window", "long-window"])
def test_lua_script_matches_the_reference(
    redis_factory: Callable[..., RedisServer], window: int
) -> None:
    server = redis_factory()
    client = redis.Redis(port=server.port)

    @given(logs, st.lists(st.integers(1, 12), min_size=1, max_size=6))
    @settings(
        max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    def check(spec: list[Any], sizes: list[int]) -> None:
        client.flushall()
        store = RedisState(server.url, window)
        store.claim()
        reference = MemoryState(window)
        log = materialize(spec)
        records = [LogRecord(3, o, t, p) for o, t, p in log]
        expected = reference.apply_batch(3, log)
        got: list[str | None] = []
        i = 0
        while i < len(records):
            size = sizes[len(got) % len(sizes)]
            got += store.apply(3, records[i : i + size])
            i += size
        got += store.apply(3, records[: len(records) // 2])  # a replay changes nothing
        assert got[: len(expected)] == expected
        assert all(code is None for code in got[len(expected) :])
        assert store.snapshot() == reference.snapshot()
        # nothing out of the window is left behind, in the hash or in the queue
        queue = client.lrange("am:ql:3", 0, -1)
        assert client.hlen("am:q:3") <= len(queue)
        store.close_sync()

    try:
        check()
    finally:
        client.close()
