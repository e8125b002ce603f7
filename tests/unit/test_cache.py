"""The operator's object cache: newer versions win, the operator's own writes are
not echoed back as changes, an apply is skipped only when nothing changed, and
workloads are kept without their pod templates. (The watches that fill it run
against a real API server in tests/controlplane/test_operator.py.)"""

from __future__ import annotations

import copy
from typing import Any

from agentmem.controller.cache import ObjectCache, fingerprint, strip


def sts(rv: int, generation: int = 1, ready: int = 0, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": "demo-shard-0",
            "namespace": "ns",
            "resourceVersion": str(rv),
            "generation": generation,
            "labels": {"agentmem.io/cluster": "demo", **labels},
            "managedFields": [{"manager": "agentmem-operator"}],
        },
        "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "x" * 1000}]}}},
        "status": {"readyReplicas": ready},
    }


def test_workloads_are_kept_without_their_template_or_managed_fields() -> None:
    kept = strip(sts(5))
    assert kept["spec"] == {"replicas": 2}
    assert "managedFields" not in kept["metadata"]
    assert kept["status"] == {"readyReplicas": 0}
    service = {"kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    assert strip(service)["spec"] == service["spec"]  # small specs are kept


def test_an_older_version_never_replaces_a_newer_one_and_echoes_are_not_changes() -> None:
    changes: list[dict[str, Any]] = []
    cache = ObjectCache(on_change=changes.append)
    cache.put(sts(10, ready=1), notify=False)  # the operator's own write
    cache.put(sts(10, ready=1))  # its echo from the watch
    assert changes == []
    cache.put(sts(9, ready=0))  # a late event
    held = cache.get("StatefulSet", "ns", "demo-shard-0")
    assert held is not None and held["status"]["readyReplicas"] == 1
    cache.put(sts(11, ready=2))  # the controller's update: a change
    assert [c["status"]["readyReplicas"] for c in changes] == [2]
    cache.remove("StatefulSet", "ns", "demo-shard-0")
    assert cache.get("StatefulSet", "ns", "demo-shard-0") is None
    assert len(changes) == 2  # a deletion is a change too


def test_an_apply_is_skipped_only_while_nobody_changed_the_object() -> None:
    cache = ObjectCache()
    answer = sts(20)
    cache.applied(answer, "digest-1")
    assert cache.unchanged("StatefulSet", "ns", "demo-shard-0", "digest-1")
    assert not cache.unchanged("StatefulSet", "ns", "demo-shard-0", "digest-2")  # new manifest

    cache.put(sts(21, ready=2))  # status only: the desired state is the same
    assert cache.unchanged("StatefulSet", "ns", "demo-shard-0", "digest-1")

    cache.put(sts(22, generation=2, ready=2))  # someone edited the spec
    assert not cache.unchanged("StatefulSet", "ns", "demo-shard-0", "digest-1")

    cache.applied(sts(23, generation=3), "digest-1")  # applied again: restored
    cache.put(sts(24, generation=3, team="ml"))  # someone added a label
    assert not cache.unchanged("StatefulSet", "ns", "demo-shard-0", "digest-1")

    cache.applied(sts(25, generation=3), "digest-1")
    cache.remove("StatefulSet", "ns", "demo-shard-0")  # someone deleted it
    assert not cache.unchanged("StatefulSet", "ns", "demo-shard-0", "digest-1")


def test_objects_without_generation_change_with_their_resource_version() -> None:
    cm = {"kind": "ConfigMap", "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "3"}}
    edited = copy.deepcopy(cm)
    edited["metadata"]["resourceVersion"] = "4"
    assert fingerprint(cm) != fingerprint(edited)


def test_lists_filter_by_namespace_and_labels_and_a_relist_drops_what_is_gone() -> None:
    cache = ObjectCache()
    a = sts(1, component="memory-node")
    b = copy.deepcopy(a)
    b["metadata"].update(name="other", namespace="ns2")
    cache.replace("StatefulSet", None, [a, b])
    assert cache.serves("StatefulSet", "anything") and not cache.serves("Service", "ns")
    assert [o["metadata"]["name"] for o in cache.list("StatefulSet", "ns")] == ["demo-shard-0"]
    assert len(cache.list("StatefulSet", None, "agentmem.io/cluster=demo")) == 2
    assert cache.list("StatefulSet", None, "agentmem.io/cluster=demo,component=router") == []
    assert len(cache.list("StatefulSet", None, "component=memory-node")) == 2
    cache.replace("StatefulSet", None, [b])
    assert cache.get("StatefulSet", "ns", "demo-shard-0") is None
    assert list(cache.keys("StatefulSet")) == [("ns2", "other")]


def test_a_clusters_lists_come_from_its_own_objects_and_follow_label_changes() -> None:
    cache = ObjectCache()
    cache.replace("StatefulSet", None, [sts(1)])
    mine = "agentmem.io/cluster=demo"
    assert [o["metadata"]["name"] for o in cache.list("StatefulSet", "ns", mine)] == [
        "demo-shard-0"
    ]
    moved = sts(2)
    moved["metadata"]["labels"]["agentmem.io/cluster"] = "other"
    cache.put(moved)
    assert cache.list("StatefulSet", "ns", mine) == []
    assert len(cache.list("StatefulSet", "ns", "agentmem.io/cluster=other")) == 1
    cache.remove("StatefulSet", "ns", "demo-shard-0")
    assert cache.list("StatefulSet", "ns", "agentmem.io/cluster=other") == []


def pod(rv: int, ip: str | None, phase: str = "Running", probed: str = "t0") -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": probed}],
        "containerStatuses": [{"name": "memory-node", "ready": True}],
    }
    if ip is not None:
        status["podIP"] = ip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "demo-shard-0-0",
            "namespace": "ns",
            "resourceVersion": str(rv),
            "labels": {"agentmem.io/cluster": "demo"},
        },
        "spec": {"containers": [{"name": "memory-node", "image": "x" * 1000}]},
        "status": status,
    }


def test_pods_are_kept_as_name_phase_and_address_and_only_those_changes_count() -> None:
    kept = strip(pod(1, "10.0.0.7"))
    assert "spec" not in kept and kept["status"] == {"phase": "Running", "podIP": "10.0.0.7"}
    changes: list[dict[str, Any]] = []
    cache = ObjectCache(on_change=changes.append)
    cache.put(pod(1, None, phase="Pending"))
    cache.put(pod(2, None, phase="Pending", probed="t1"))  # nothing the cache keeps changed
    cache.put(pod(3, "10.0.0.7"))
    cache.put(pod(4, "10.0.0.7", probed="t2"))
    assert [c["status"] for c in changes] == [
        {"phase": "Pending"},
        {"phase": "Running", "podIP": "10.0.0.7"},
    ]
    held = cache.get("Pod", "ns", "demo-shard-0-0")
    assert held is not None and held["metadata"]["resourceVersion"] == "4"  # kept current
