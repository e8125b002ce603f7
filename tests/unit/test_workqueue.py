"""The operator's work queue, with real threads: one reconcile per cluster at a
time, bursts collapsed, a change during a reconcile not lost, requeues at their
time, failures retried with back-off while other clusters go on."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Hashable

import pytest

from agentmem.controller import queue as queue_module
from agentmem.controller.queue import WorkQueue


def wait_for(what: str, check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder:
    def __init__(self, hold: float = 0.0) -> None:
        self.calls: list[Hashable] = []
        self.running: dict[Hashable, int] = {}
        self.overlap = False
        self.hold = hold
        self.lock = threading.Lock()

    def __call__(self, key: Hashable) -> float | None:
        with self.lock:
            self.calls.append(key)
            self.running[key] = self.running.get(key, 0) + 1
            if self.running[key] > 1:
                self.overlap = True
        time.sleep(self.hold)
        with self.lock:
            self.running[key] -= 1
        return None


def test_a_burst_of_adds_is_one_reconcile() -> None:
    record = Recorder()
    q = WorkQueue(record, workers=2)
    for _ in range(100):
        q.add(("ns", "a"))
    q.add(("ns", "b"))
    q.start()
    try:
        wait_for("both reconciled", lambda: len(record.calls) >= 2)
        time.sleep(0.2)
        assert sorted(record.calls) == [("ns", "a"), ("ns", "b")]  # type: ignore[type-var]
    finally:
        q.stop()


def test_one_cluster_is_never_reconciled_by_two_threads_and_no_change_is_lost() -> None:
    record = Recorder(hold=0.05)
    q = WorkQueue(record, workers=4)
    q.start()
    try:
        q.add("a")
        wait_for("the first reconcile to start", lambda: record.calls)
        for _ in range(20):  # while it runs: the change must be seen by a later reconcile
            q.add("a")
        wait_for("a second reconcile", lambda: len(record.calls) >= 2)
        time.sleep(0.2)
        assert not record.overlap, "two threads reconciled the same cluster at once"
        assert record.calls == ["a", "a"], record.calls  # collapsed, but not dropped
    finally:
        q.stop()


def test_many_clusters_are_reconciled_concurrently() -> None:
    record = Recorder(hold=0.2)
    q = WorkQueue(record, workers=4)
    for i in range(8):
        q.add(i)
    started = time.monotonic()
    q.start()
    try:
        wait_for("all", lambda: len(record.calls) == 8 and not any(record.running.values()))
        # 8 reconciles of 0.2 s by 4 threads: about 0.4 s, not 1.6 s one after another.
        assert time.monotonic() - started < 1.2
    finally:
        q.stop()


def test_a_requeue_comes_at_its_time_and_an_earlier_add_wins() -> None:
    calls: list[tuple[str, float]] = []
    started = time.monotonic()

    def process(key: Hashable) -> float | None:
        calls.append((str(key), time.monotonic() - started))
        return 0.3 if len(calls) == 1 else None

    q = WorkQueue(process, workers=1)
    q.start()
    try:
        q.add("a")
        wait_for("the requeued reconcile", lambda: len(calls) >= 2)
        assert calls[1][1] - calls[0][1] >= 0.28
        q.add("b", delay=30)
        q.add("b", delay=0.05)  # earlier: wins
        q.add("b", delay=60)  # later: ignored
        wait_for("b", lambda: any(k == "b" for k, _ in calls), timeout=2)
        time.sleep(0.1)
        assert [k for k, _ in calls].count("b") == 1
        assert q.waiting() == 0
    finally:
        q.stop()


def test_a_failing_cluster_backs_off_and_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_module, "RETRY_SECONDS", (0.05, 0.2))
    failures: list[float] = []
    done: list[Hashable] = []

    def process(key: Hashable) -> float | None:
        if key == "bad":
            failures.append(time.monotonic())
            raise RuntimeError("the API server said no")
        done.append(key)
        return None

    q = WorkQueue(process, workers=1)
    q.start()
    try:
        q.add("bad")
        q.add("good")
        wait_for("retries", lambda: len(failures) >= 5)
        assert "good" in done
        gaps = [b - a for a, b in itertools.pairwise(failures)]
        assert gaps[0] >= 0.04 and gaps[1] >= 0.09  # doubling
        assert max(gaps) < 0.5  # capped
        assert q.alive()
    finally:
        q.stop()
