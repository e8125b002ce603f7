"""The deterministic apply function: replays, replicas, conditions, expiry, dedup."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agentmem.eventlog.events import Event, EventDecodeError
from agentmem.node.apply import DEFAULT_DEDUP_WINDOW_MS, MemoryState, Outcome, merge_patch

T0 = 1_800_000_000_000


def event(
    key: str = "k",
    op: str = "put",
    value: Any = 1,
    expect: Any = None,
    expires_at: int | None = None,
    rid: str = "",
    agent: str = "a",
) -> bytes:
    return Event(
        op=op,  # type: ignore[arg-type]
        tenant="t",
        agent=agent,
        key=key,
        value=None if op == "delete" else json.dumps(value),
        expect=expect,
        expires_at=expires_at,
        rid=rid,
        actor="test",
        ts=0,
    ).encode()


# A random log: events over a few keys with every kind of condition, TTLs and
# repeated request ids, with log times that mostly grow.
events = st.builds(
    lambda key, op, value, expect, ttl, rid: (key, op, value, expect, ttl, rid),
    st.sampled_from(["k1", "k2", "dir/k3"]),
    st.sampled_from(["put", "merge", "delete"]),
    st.integers(-3, 3),
    st.one_of(st.none(), st.just("absent"), st.integers(0, 30), st.integers(0, 8)),
    st.one_of(st.none(), st.integers(1, 50)),
    st.one_of(st.just(""), st.sampled_from(["r1", "r2", "r3"])),
)
logs = st.lists(st.tuples(events, st.integers(0, 20)), max_size=60)


def materialize(spec: list[Any]) -> list[tuple[int, int, bytes]]:
    out, ts = [], T0
    for offset, ((key, op, value, expect, ttl, rid), step) in enumerate(spec):
        ts += step
        expires = ts + ttl if ttl is not None else None
        out.append((offset, ts, event(key, op, value, expect, expires, rid)))
    return out


@given(logs, st.data())
@settings(max_examples=300, deadline=None)
def test_replaying_a_prefix_twice_equals_once(spec: list[Any], data: st.DataObject) -> None:
    log = materialize(spec)
    cut = data.draw(st.integers(0, len(log)))
    once = MemoryState()
    once.apply_batch(0, log)
    twice = MemoryState()
    twice.apply_batch(0, log[:cut])
    replayed = twice.apply_batch(0, log[:cut])
    assert all(code is None for code in replayed)
    twice.apply_batch(0, log)
    assert twice.snapshot() == once.snapshot()


@given(logs, st.lists(st.integers(1, 10), min_size=1, max_size=10))
@settings(max_examples=300, deadline=None)
def test_replicas_with_different_batches_agree(spec: list[Any], sizes: list[int]) -> None:
    log = materialize(spec)
    a, b = MemoryState(), MemoryState()
    codes_a = a.apply_batch(0, log)
    codes_b: list[str | None] = []
    i = 0
    while i < len(log):
        size = sizes[len(codes_b) % len(sizes)]
        codes_b += b.apply_batch(0, log[i : i + size])
        i += size
    assert codes_a == codes_b
    assert a.snapshot() == b.snapshot()


def test_compare_and_set() -> None:
    s = MemoryState()
    assert s.apply(0, 0, T0, event(expect="absent")) == "a:0"
    assert s.apply(0, 1, T0, event(expect="absent")) == "c:0"
    assert s.apply(0, 2, T0, event(expect=1)) == "c:0"
    assert s.apply(0, 3, T0, event(value=2, expect=0)) == "a:3"
    assert s.records["t/a/k"].value == "2"
    assert s.apply(0, 4, T0, event(op="delete", expect=0)) == "c:3"
    assert s.apply(0, 5, T0, event(op="delete", expect=3)) == "a:5"
    assert "t/a/k" not in s.records
    assert s.apply(0, 6, T0, event(expect=5)) == "c:-"


def test_expiry_follows_log_time() -> None:
    s = MemoryState()
    assert s.apply(0, 0, T0, event(expires_at=T0 + 100)) == "a:0"
    assert s.apply(0, 1, T0 + 99, event(key="other")) == "a:1"
    assert s.apply(0, 2, T0 + 99, event(expect="absent")) == "c:0"  # still live
    assert s.apply(0, 3, T0 + 100, event(expect="absent", value=9)) == "a:3"  # expired
    assert s.records["t/a/k"].expires_at is None


def test_sweep_removes_expired_records_by_log_time() -> None:
    s = MemoryState()
    s.apply_batch(0, [(0, T0, event(expires_at=T0 + 10)), (1, T0, event(key="keep"))])
    assert "t/a/k" in s.records
    s.apply_batch(0, [(2, T0 + 10, event(key="later"))])
    assert "t/a/k" not in s.records
    assert sorted(s.index["t/a"]) == ["keep", "later"]


def test_request_ids_deduplicate_within_the_window() -> None:
    s = MemoryState()
    assert s.apply(0, 0, T0, event(rid="r", value=1)) == "a:0"
    assert s.apply(0, 1, T0 + 5, event(rid="r", value=2)) == "da:0"
    assert s.records["t/a/k"].value == "1"
    assert s.apply(0, 2, T0 + DEFAULT_DEDUP_WINDOW_MS, event(rid="r", value=3)) == "a:2"
    assert s.apply(0, 3, T0, event(rid="c", expect=99)) == "c:2"
    assert s.apply(0, 4, T0, event(rid="c")) == "dc:2"  # a retry returns the first outcome


def test_tenants_and_partitions_do_not_share_request_ids() -> None:
    s = MemoryState()
    other = Event("put", "u", "a", "k", "1", None, None, "r", "", 0).encode()
    assert s.apply(0, 0, T0, event(rid="r")) == "a:0"
    assert s.apply(0, 1, T0, other) == "a:1"
    assert s.apply(1, 0, T0, event(rid="r")) == "a:0"  # another partition decides alone


def test_undecodable_events_are_skipped_and_counted() -> None:
    s = MemoryState()
    assert s.apply(0, 0, T0, b"not json") == "x"
    assert s.apply(0, 1, T0, b'{"v": 99}') == "x"
    assert s.applied[0] == 1


def test_drop_partition_forgets_its_keys() -> None:
    s = MemoryState()
    s.apply(3, 0, T0, event())
    s.apply(4, 0, T0, event(agent="b"))
    s.drop_partition(3)
    assert list(s.records) == ["t/b/k"]
    assert 3 not in s.applied


def test_outcome_codes() -> None:
    assert Outcome.parse("a:7") == Outcome("applied", 7)
    assert Outcome.parse("c:-") == Outcome("conflict", None)
    assert Outcome.parse("dc:4") == Outcome("conflict", 4, duplicate=True)
    assert Outcome.parse("x") == Outcome("invalid", None)


def test_merge_patch_rfc7396() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2}}, {"b": {"c": None, "d": 3}, "e": [1]}) == {
        "a": 1,
        "b": {"d": 3},
        "e": [1],
    }
    assert merge_patch([1], {"a": 1}) == {"a": 1}
    assert merge_patch({"a": 1}, [2]) == [2]
    assert merge_patch(None, {"a": None}) == {}


def test_event_round_trip_and_errors() -> None:
    raw = event(expect=3, expires_at=5, rid="r")
    assert Event.decode(raw).encode() == raw
    wrong_type = event().replace(b'"tenant":"t"', b'"tenant":null')
    for bad in (b"[", b'{"v": 2}', b'{"v": 1, "op": "put"}', wrong_type):
        try:
            Event.decode(bad)
        except EventDecodeError:
            continue
        raise AssertionError(bad)
