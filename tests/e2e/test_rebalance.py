"""Shards move under load with no failed write: the operator drives real memory nodes
through rebalances while agents write and read through the router."""

from __future__ import annotations

import json
import time
from typing import Any

from agentmem.directory import Directory
from agentmem.model import naming
from tests.controlplane.conftest import Operator
from tests.e2e.conftest import (
    Env,
    RouterAddress,
    client_token,
    cluster,
    cluster_ca,
    eventually,
    kill_container,
    wait_ready,
)
from tests.e2e.load import Workload

REBALANCE = {
    "maxConcurrentMoves": 4,
    "handoffSeconds": 10,
    "retireGraceSeconds": 60,
    "warmupTimeoutSeconds": 120,
}


def directory(e2e: Env, ns: str, name: str = "demo") -> Directory | None:
    cm = e2e.plane.kubectl.get("configmap", naming.directory_name(name), ns)
    return None if cm is None else Directory.from_json(cm["data"]["directory.json"])


def ready(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    return any(
        c["type"] == "Ready"
        and c["status"] == "True"
        and c.get("observedGeneration") == obj["metadata"]["generation"]
        for c in status.get("conditions", [])
    )


def scale_to(e2e: Env, ns: str, shards: int, timeout: float = 300) -> dict[str, Any]:
    """Scale and wait until the plan is done, the leaving shards gone, the cluster Ready."""
    kubectl = e2e.plane.kubectl
    kubectl.run("scale", "amc/demo", f"--replicas={shards}", "-n", ns)

    def done() -> dict[str, Any] | None:
        obj = kubectl.get("amc", "demo", ns) or {}
        d = directory(e2e, ns)
        settled = (
            d is not None
            and len(set(d.table)) == shards
            and (obj.get("status") or {}).get("rebalance") is None
            and ready(obj)
        )
        return obj if settled else None

    started = time.monotonic()
    found: dict[str, Any] = eventually(f"{shards} shards", done, timeout=timeout)
    print(f"scaled to {shards} shards in {time.monotonic() - started:.0f}s")
    return found


def test_scaling_2_3_4_2_under_load_is_invisible_to_agents(
    e2e: Env, e2e_namespace: str, e2e_operator: Operator
) -> None:
    kubectl, ns = e2e.plane.kubectl, e2e_namespace
    kubectl.apply(cluster(e2e, ns, rebalance=REBALANCE), ns)
    wait_ready(e2e, ns)
    load = Workload(
        RouterAddress(e2e, ns),
        writers=4,
        pause=0.02,
        token=client_token(e2e, ns),
        ssl_context=cluster_ca(e2e, ns),
    ).start()
    try:
        time.sleep(5)
        epochs = [directory(e2e, ns).epoch]  # type: ignore[union-attr]
        for shards in (3, 4, 2):
            scale_to(e2e, ns, shards)
            epochs.append(directory(e2e, ns).epoch)  # type: ignore[union-attr]
            time.sleep(3)
    finally:
        load.stop()
    load.verify()
    summary = load.summary()
    print("scale 2 -> 3 -> 4 -> 2 under load:", json.dumps(summary))
    assert epochs == sorted(epochs) and len(set(epochs)) == 4, epochs
    assert summary["acked"] > 100
    assert summary["failed"] == 0, (summary, load.first_misses)
    assert summary["lost"] == 0, load.first_misses
    assert summary["missed_reads"] == 0, load.first_misses
    sets = {s["metadata"]["name"] for s in kubectl.items("statefulsets", ns)}
    assert sets == {"demo-shard-0", "demo-shard-1"}


def planned_table(e2e: Env, ns: str, before: Directory, shards: int) -> tuple[int, ...]:
    """The table a rebalance that nothing interrupted ends with."""
    from agentmem.directory import assign
    from agentmem.model import AgentMemoryCluster
    from agentmem.resources import shard_slots

    obj = e2e.plane.kubectl.get("amc", "demo", ns)
    assert obj is not None
    model = AgentMemoryCluster.from_api(obj)
    return tuple(assign(before.partitions, shard_slots(model, range(shards)), before.table))


def committed_epochs(e2e: Env, ns: str) -> list[str]:
    events = e2e.plane.kubectl.items("events", ns)
    return [e["message"].split(":")[0] for e in events if e.get("reason") == "EpochCommitted"]


def test_a_rebalance_survives_operator_kills_node_kills_and_a_broker_restart(
    e2e: Env, e2e_namespace: str, e2e_operator: Operator
) -> None:
    """The operator SIGKILLed at every step of the plan, a gaining node SIGKILLed while
    it warms up, the broker restarted in the middle: the plan ends with the table an
    uninterrupted one would have, every epoch committed once, nothing lost."""
    kubectl, ns = e2e.plane.kubectl, e2e_namespace
    kubectl.apply(cluster(e2e, ns, rebalance={**REBALANCE, "maxConcurrentMoves": 2}), ns)
    wait_ready(e2e, ns)
    before = directory(e2e, ns)
    assert before is not None
    load = Workload(
        RouterAddress(e2e, ns),
        writers=3,
        token=client_token(e2e, ns),
        ssl_context=cluster_ca(e2e, ns),
    ).start()
    faults = {"operator": 0, "node": 0, "broker": 0}
    try:
        time.sleep(3)
        kubectl.run("scale", "amc/demo", "--replicas=4", "-n", ns)
        seen: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            obj = kubectl.get("amc", "demo", ns) or {}
            reb = (obj.get("status") or {}).get("rebalance")
            if reb is None and len(seen) > 1:
                break
            if reb is not None and (reb["phase"], reb["currentStep"]) not in seen:
                seen.add((reb["phase"], reb["currentStep"]))
                e2e_operator.kill()  # SIGKILL, at every new step
                faults["operator"] += 1
                if reb["phase"] == "Warming" and faults["node"] == 0:
                    for pod in kubectl.items("pods", ns, "agentmem.io/shard=3"):
                        faults["node"] += kill_container(
                            e2e, ns, pod["metadata"]["name"], "memory-node"
                        )
                if reb["currentStep"] == 2 and faults["broker"] == 0:
                    e2e.kafka.stop()
                    e2e.kafka.start()
                    faults["broker"] += 1
                e2e_operator.start()
            time.sleep(0.2)
        scale_done = eventually("the plan to finish", lambda: _settled(e2e, ns, 4), timeout=300)
        assert scale_done
    finally:
        load.stop()
    load.verify()
    summary = load.summary()
    print("faults during the rebalance:", faults, json.dumps(summary))
    assert faults["operator"] >= 4 and faults["node"] >= 1 and faults["broker"] == 1
    final = directory(e2e, ns)
    assert final is not None
    assert final.table == planned_table(e2e, ns, before, 4)
    commits = committed_epochs(e2e, ns)
    assert len(commits) == len(set(commits)), f"an epoch was committed twice: {commits}"
    assert final.epoch == before.epoch + len(commits)
    assert summary["lost"] == 0 and summary["missed_reads"] == 0, load.first_misses
    assert summary["failed"] == 0, summary


def _settled(e2e: Env, ns: str, shards: int) -> bool:
    obj = e2e.plane.kubectl.get("amc", "demo", ns) or {}
    d = directory(e2e, ns)
    return bool(
        d is not None
        and len(set(d.table)) == shards
        and (obj.get("status") or {}).get("rebalance") is None
        and ready(obj)
    )


def test_a_deleted_directory_keeps_its_owners_during_and_after_a_rebalance(
    e2e: Env, e2e_namespace: str, e2e_operator: Operator
) -> None:
    kubectl, ns = e2e.plane.kubectl, e2e_namespace
    kubectl.apply(cluster(e2e, ns, rebalance={**REBALANCE, "maxConcurrentMoves": 2}), ns)
    wait_ready(e2e, ns)
    before = directory(e2e, ns)
    assert before is not None
    kubectl.run("scale", "amc/demo", "--replicas=3", "-n", ns)

    def mid_plan() -> Directory | None:
        d = directory(e2e, ns)
        return d if d is not None and d.epoch > before.epoch else None

    at = eventually("a committed step", mid_plan, timeout=120)
    kubectl.run("delete", "configmap", naming.directory_name("demo"), "-n", ns)
    back = eventually("the directory back", lambda: directory(e2e, ns), timeout=60)
    assert back.epoch >= at.epoch
    assert back.table == at.table or back.epoch > at.epoch  # same owners, or a later step
    eventually("the plan to finish", lambda: _settled(e2e, ns, 3), timeout=300)
    final = directory(e2e, ns)
    assert final is not None and final.table == planned_table(e2e, ns, before, 3)
    kubectl.run("delete", "configmap", naming.directory_name("demo"), "-n", ns)
    again = eventually("the directory back", lambda: directory(e2e, ns), timeout=60)
    assert (again.epoch, again.table) == (final.epoch, final.table)
