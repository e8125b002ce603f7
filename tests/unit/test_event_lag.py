"""status.eventLag: the memory nodes' answers turned into a coarse step, asked at most
every lag_seconds. (Against real nodes, with a stalled one:
tests/e2e/test_prometheus.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from agentmem.controller.nodes import (
    CAUGHT_UP,
    LAG_UNKNOWN,
    NO_CREDENTIALS,
    Credentials,
    PodView,
    ProbeError,
    event_lag,
    lag_step,
)
from agentmem.controller.reconcile import Observation, Reconciler
from agentmem.model import AgentMemoryCluster, naming


class Nodes:
    """Answers of /v1/status by pod address (an exception: the pod does not answer)."""

    def __init__(self, answers: dict[str, dict[str, Any] | Exception]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def get(
        self, address: str, path: str, credentials: Credentials = NO_CREDENTIALS
    ) -> dict[str, Any]:
        assert path == "/v1/status"
        self.asked.append(address)
        answer = self.answers[address]
        if isinstance(answer, Exception):
            raise answer
        return answer


def status(**lags: tuple[bool, float]) -> dict[str, Any]:
    """A node's status: partition -> (owned, lag_seconds)."""
    return {"partitions": {p: {"owned": owned, "lag_seconds": s} for p, (owned, s) in lags.items()}}


@pytest.mark.parametrize(
    ("seconds", "step"),
    [(0, "<1s"), (0.99, "<1s"), (1.0, "<1s"), (1.01, ">1s"), (10.5, ">10s"), (61, ">1m"),
     (601, ">10m"), (3601, ">1h"), (10**6, ">1h")],
)  # fmt: skip
def test_lag_is_shown_in_steps(seconds: float, step: str) -> None:
    assert lag_step(seconds) == step


def test_the_largest_lag_of_an_owned_partition_counts() -> None:
    nodes = Nodes(
        {
            "10.0.0.1": status(**{"0": (True, 0.2), "1": (False, 500.0)}),  # 1 warms up here
            "10.0.0.2": status(**{"1": (True, 12.0)}),
        }
    )
    pods = [PodView("a", "10.0.0.1", "Running"), PodView("b", "10.0.0.2", "Running")]
    assert event_lag(nodes, pods) == ">10s"
    assert event_lag(nodes, pods[:1]) == CAUGHT_UP


def test_a_node_that_does_not_answer_makes_the_lag_unknown() -> None:
    nodes = Nodes({"10.0.0.1": status(**{"0": (True, 0.0)}), "10.0.0.2": ProbeError("refused")})
    running = [PodView("a", "10.0.0.1", "Running"), PodView("b", "10.0.0.2", "Running")]
    assert event_lag(nodes, running) == LAG_UNKNOWN
    starting = [running[0], PodView("b", None, "Pending")]  # not running: not asked
    assert event_lag(nodes, starting) == CAUGHT_UP
    assert event_lag(nodes, starting[1:]) == LAG_UNKNOWN  # no node runs


class Pods:
    """The Kube the reconciler lists node pods from."""

    def list(self, api: str, kind: str, namespace: str, selector: str) -> list[dict[str, Any]]:
        assert (api, kind) == ("v1", "Pod")
        pod = {"metadata": {"name": "demo-shard-0-0"}}
        return [{**pod, "status": {"phase": "Running", "podIP": "10.0.0.1"}}]


def test_the_nodes_are_asked_at_most_every_lag_seconds() -> None:
    cluster = AgentMemoryCluster.from_api(
        {
            "apiVersion": naming.API_VERSION,
            "kind": naming.KIND,
            "metadata": {"name": "demo", "namespace": "ns", "uid": "u"},
            "spec": {"eventLog": {"kafka": {"bootstrapServers": "k:9092",
                                            "topicManagement": "external"}},
                     "auth": {"enabled": False}, "tls": {"enabled": False}},
        }
    )  # fmt: skip
    nodes = Nodes({"10.0.0.1": status(**{"0": (True, 2.5)})})
    emit = lambda *args: None  # noqa: E731
    reconciler = Reconciler(Pods(), emit, probe=nodes, lag_seconds=30)  # type: ignore[arg-type]
    seen = Observation()
    reconciler._observe_lag(cluster, seen)
    assert seen.event_lag == ">1s" and nodes.asked == ["10.0.0.1"]
    again = Observation()
    reconciler._observe_lag(cluster, again)
    assert again.event_lag is None and len(nodes.asked) == 1  # status keeps ">1s"
    off = Reconciler(Pods(), emit, probe=nodes, lag_seconds=0)  # type: ignore[arg-type]
    off._observe_lag(cluster, seen := Observation())
    assert seen.event_lag is None and len(nodes.asked) == 1
