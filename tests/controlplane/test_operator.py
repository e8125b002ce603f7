"""The operator against a real API server, controller manager, scheduler and kwok nodes."""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from agentmem.directory import Directory
from agentmem.model import naming
from tests.conftest import EXAMPLES, load_yaml
from tests.controlplane.conftest import ControlPlane, Kubectl, Operator, wait_until
from tests.unit.test_crd import merge

EXAMPLE = load_yaml(EXAMPLES / "basic" / "cluster.yaml")[0]
ZONES = ["zone-a", "zone-b", "zone-c"]


def cluster(name: str = "demo", **spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(EXAMPLE)
    doc["metadata"]["name"] = name
    return merge(doc, {"spec": spec}) if spec else doc


def ready_cluster(kubectl: Kubectl, ns: str, name: str = "demo") -> dict[str, Any] | None:
    obj = kubectl.get("amc", name, ns)
    if obj is None:
        return None
    generation = obj["metadata"]["generation"]
    status = obj.get("status") or {}
    for c in status.get("conditions", []):
        if (
            c["type"] == "Ready"
            and c["status"] == "True"
            and c["observedGeneration"] == generation == status["observedGeneration"]
        ):
            return obj
    return None


def wait_ready(kubectl: Kubectl, ns: str, name: str = "demo", timeout: float = 120) -> Any:
    return wait_until(f"{name} Ready", lambda: ready_cluster(kubectl, ns, name), timeout)


def directory(kubectl: Kubectl, ns: str, name: str = "demo") -> Directory | None:
    cm = kubectl.get("configmap", naming.directory_name(name), ns)
    return None if cm is None else Directory.from_json(cm["data"]["directory.json"])


def scale(kubectl: Kubectl, ns: str, shards: int, name: str = "demo") -> None:
    kubectl.run("scale", f"amc/{name}", f"--replicas={shards}", "-n", ns)


# 4.1 ------------------------------------------------------------------------


def test_crd_installs_and_explains_its_fields(controlplane: ControlPlane) -> None:
    crd = controlplane.kubectl.json("get", "crd", "agentmemoryclusters.agentmem.io")
    assert crd["spec"]["names"]["shortNames"] == ["amc"]
    explained = controlplane.kubectl.run("explain", "agentmemoryclusters.spec").stdout
    for field in ("shards", "replicasPerShard", "partitions", "eventLog", "placement", "rebalance"):
        assert field in explained
    assert "Number of shards. Changing it rebalances partitions" in explained
    deep = controlplane.kubectl.run(
        "explain", "agentmemoryclusters.spec.eventLog.kafka.topicManagement"
    ).stdout
    assert "strimzi" in deep and "direct" in deep and "external" in deep
    embedder = controlplane.kubectl.run(
        "explain", "agentmemoryclusters.spec.semantic.embedder.kind"
    ).stdout
    assert "OpenAI-compatible" in embedder
    # What kubectl explain reads: the API server's OpenAPI document. Every field of the
    # spec and the status has a text there.
    document = json.loads(
        controlplane.kubectl.run("get", "--raw", f"/openapi/v3/apis/{naming.GROUP}/v1alpha1").stdout
    )
    schemas = document["components"]["schemas"]
    (root,) = [s for name, s in schemas.items() if name.endswith(f".{naming.KIND}")]
    missing: list[str] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for name, child in (node.get("properties") or {}).items():
            where = f"{path}.{name}"
            if "$ref" in child or "allOf" in child:
                continue  # metadata: Kubernetes' own ObjectMeta
            if not child.get("description"):
                missing.append(where)
            walk(child, where)
            if isinstance(child.get("items"), dict):
                walk(child["items"], where + "[]")
            if isinstance(child.get("additionalProperties"), dict):
                walk(child["additionalProperties"], where + "{}")

    walk(root["properties"]["spec"], "spec")
    walk(root["properties"]["status"], "status")
    assert not missing, f"fields without an explanation: {missing}"
    assert len(str(root)) > 10_000  # the whole schema, not a stub


# 4.2 ------------------------------------------------------------------------


def kafka(**fields: Any) -> dict[str, Any]:
    """A patch that replaces spec.eventLog.kafka (direct topic management, plus fields)."""
    return {"spec": {"eventLog": {"kafka": {"bootstrapServers": "k:9092", **fields}}}}


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("negative shards", {"spec": {"shards": -1}}, "spec.shards"),
    ("zero replicas", {"spec": {"replicasPerShard": 0}}, "spec.replicasPerShard"),
    ("shards above partitions", {"spec": {"shards": 65}}, "spec.shards must not exceed"),
    ("too many partitions", {"spec": {"partitions": 5000}}, "spec.partitions"),
    ("unknown consistency", {"spec": {"consistency": "linearizable"}}, "spec.consistency"),
    ("overlong name", {"metadata": {"name": "a" * 43}}, "metadata.name must be at most 42"),
    ("name not a DNS label", {"metadata": {"name": "9lives"}}, "metadata.name must be a DNS-1035"),
    (
        "strimzi without a cluster name",
        kafka(),
        "spec.eventLog.kafka.strimzi.clusterName is required",
    ),
    ("bad topic management", kafka(topicManagement="x"), "spec.eventLog.kafka.topicManagement"),
    ("bad quantity", {"spec": {"cache": {"memoryLimit": "lots"}}}, "spec.cache.memoryLimit"),
    ("duplicate zones", {"spec": {"placement": {"zones": ["a", "a"]}}}, "zones must be unique"),
    (
        "audit window out of range",
        kafka(topicManagement="direct", config={"auditWindowHours": 0}),
        "spec.eventLog.kafka.config.auditWindowHours",
    ),
    (
        "cleanup policy overridden",
        kafka(topicManagement="direct", config={"extra": {"cleanup.policy": "compact"}}),
        "must not set cleanup.policy",
    ),
    (
        "retention backstop inside the audit window",
        kafka(
            topicManagement="direct",
            config={"auditWindowHours": 200, "retentionBackstopHours": 100},
        ),
        "retentionBackstopHours must be greater than",
    ),
    ("store without a URL", {"spec": {"store": {"poolSize": 2}}}, "spec.store.urlSecret"),
    (
        "store schema not an identifier",
        {"spec": {"store": {"urlSecret": {"name": "pg", "key": "url"}, "schemaName": "a-b"}}},
        "spec.store.schemaName",
    ),
    (
        "store verified without a CA",
        {
            "spec": {
                "store": {"urlSecret": {"name": "pg", "key": "url"}, "tls": {"mode": "verify-ca"}}
            }
        },
        "spec.store.tls.caSecret is required",
    ),
    ("dedup window of a day and more", {"spec": {"dedup": {"windowSeconds": 90000}}}, "spec.dedup"),
    (
        "min ISR above replicas",
        kafka(topicManagement="direct", replicas=1),
        "minInSyncReplicas must not exceed",
    ),
    ("unknown field", {"spec": {"shardz": 3}}, ".spec.shardz: field not declared in schema"),
    (
        "semantic memory without dimensions",
        {"spec": {"semantic": {"milvusUri": "http://milvus:19530"}}},
        "spec.semantic.dimensions",
    ),
    (
        "an embedder endpoint without a URL",
        {
            "spec": {
                "semantic": {
                    "milvusUri": "http://milvus:19530",
                    "dimensions": 384,
                    "embedder": {"kind": "openai"},
                }
            }
        },
        "spec.semantic.embedder.url is required when kind is openai",
    ),
    (
        "a Milvus URI that is not one",
        {"spec": {"semantic": {"milvusUri": "milvus:19530", "dimensions": 384}}},
        "spec.semantic.milvusUri",
    ),
]


@pytest.mark.parametrize(("case", "patch", "message"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_resources_are_rejected_naming_the_field(
    controlplane: ControlPlane, namespace: str, case: str, patch: dict[str, Any], message: str
) -> None:
    doc = merge(cluster(), patch)
    result = controlplane.kubectl.run(
        "apply", "--server-side", "-n", namespace, "-f", "-",
        stdin=json.dumps(doc), check=False,
    )  # fmt: skip
    assert result.returncode != 0, f"{case} was accepted"
    assert message in result.stderr, result.stderr
    if message.startswith("metadata.name"):  # the error names the field, not <nil>
        assert f"metadata.name: Invalid value: {message}" in result.stderr, result.stderr


def test_partitions_are_immutable(controlplane: ControlPlane, namespace: str) -> None:
    kubectl = controlplane.kubectl
    kubectl.apply(cluster(), namespace)
    result = kubectl.run(
        "patch", "amc", "demo", "-n", namespace, "--type=merge",
        "-p", '{"spec": {"partitions": 128}}', check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "spec.partitions is immutable" in result.stderr


# 4.3 ------------------------------------------------------------------------


def test_example_cluster_becomes_ready(controlplane: ControlPlane, operator: Operator) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    started = time.monotonic()
    kubectl.apply(cluster(), ns)
    obj = wait_ready(kubectl, ns)
    print(f"apply -> Ready=True in {time.monotonic() - started:.1f}s")
    uid = obj["metadata"]["uid"]
    status = obj["status"]
    assert status["phase"] == "Ready"
    assert status["readyShards"] == status["shards"] == 3
    assert status["directoryEpoch"] == 1

    expected = {
        ("ServiceAccount", "demo-node"),
        ("ConfigMap", "demo-directory"), ("KafkaTopic", "agentmem." + ns + ".demo.events"),
        ("Service", "demo"), ("Service", "demo-router"), ("Deployment", "demo-router"),
        ("NetworkPolicy", "demo-node"), ("NetworkPolicy", "demo-router"),
    } | {(k, f"demo-shard-{i}") for i in range(3)
         for k in ("StatefulSet", "Service", "PodDisruptionBudget")}  # fmt: skip
    for kind, name in expected:
        child = kubectl.get(kind.lower(), name, ns)
        assert child is not None, f"{kind} {name} missing"
        refs = child["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"], r["controller"]) for r in refs] == [
            ("AgentMemoryCluster", uid, True)
        ], f"{kind} {name}"
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "demo"
        assert labels["app.kubernetes.io/managed-by"] == "agentmem-operator"
        assert labels["app.kubernetes.io/part-of"] == "agentmem"
    # No monitoring.coreos.com API here: no ServiceMonitor was attempted.
    assert kubectl.run("get", "servicemonitors", "-n", ns, check=False).returncode != 0

    nodes = {n["metadata"]["name"]: n for n in kubectl.items("nodes", "")}
    for shard in range(3):
        pods = kubectl.items("pods", ns, f"agentmem.io/shard={shard}")
        assert len(pods) == 2
        zones = set()
        for pod in pods:
            assert pod["status"]["phase"] == "Running"
            ready = [c for c in pod["status"]["conditions"] if c["type"] == "Ready"]
            assert ready and ready[0]["status"] == "True"
            node = nodes[pod["spec"]["nodeName"]]
            assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
            zones.add(node["metadata"]["labels"]["topology.kubernetes.io/zone"])
        assert len(zones) == 2, f"shard {shard} replicas share a zone: {zones}"

    d = directory(kubectl, ns)
    assert d is not None and d.epoch == 1
    assert sorted(set(d.table)) == [0, 1, 2] and len(d.table) == 64


# 4.4 ------------------------------------------------------------------------


def test_a_rebalance_waits_for_its_gaining_nodes_and_names_what_holds_it(
    controlplane: ControlPlane, operator: Operator
) -> None:
    """Pods under kwok run nothing: the gaining shard's nodes never answer. The
    step does not commit on StatefulSet readiness; after the warm-up timeout the
    cluster is Degraded, naming the pods. (Rebalances that complete are proven in
    the e2e tier, with nodes that run.)"""
    kubectl, ns = controlplane.kubectl, operator.namespace
    kubectl.apply(cluster(rebalance={"maxConcurrentMoves": 8, "warmupTimeoutSeconds": 10}), ns)
    wait_ready(kubectl, ns)
    before = directory(kubectl, ns)
    assert before is not None
    scale(kubectl, ns, 4)

    def degraded() -> str | None:
        obj = kubectl.get("amc", "demo", ns) or {}
        for c in (obj.get("status") or {}).get("conditions", []):
            if c["type"] == "Degraded" and c["status"] == "True":
                return str(c["reason"]) + ": " + str(c["message"])
        return None

    message = wait_until("Degraded WarmupTimeout", degraded, timeout=120)
    assert message.startswith("WarmupTimeout: step 1 of ")
    assert "pod demo-shard-3-0" in message and "does not answer" in message
    pending = directory(kubectl, ns)
    assert pending is not None and pending.epoch == before.epoch  # nothing committed
    assert pending.pending is not None and pending.pending.epoch == before.epoch + 1
    assert {m.target for m in pending.pending.moves} == {3}
    obj = kubectl.get("amc", "demo", ns)
    assert obj is not None and obj["status"]["rebalance"]["phase"] == "Warming"


# 4.6 ------------------------------------------------------------------------


def test_deletion_is_garbage_collected_without_the_operator(
    controlplane: ControlPlane, operator: Operator
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    kubectl.apply(cluster(), ns)
    obj = wait_ready(kubectl, ns)
    assert not obj["metadata"].get("finalizers")
    operator.stop()
    kubectl.run("delete", "amc", "demo", "-n", ns, "--timeout=30s")

    def gone() -> bool:
        kinds = "statefulsets,services,configmaps,deployments,poddisruptionbudgets,kafkatopics"
        return not kubectl.items(
            f"{kinds},roles,rolebindings,networkpolicies", ns, "agentmem.io/cluster=demo"
        )

    wait_until("every child to be garbage-collected", gone, timeout=120)


# 4.7 ------------------------------------------------------------------------


def test_paused_annotation_stops_and_resumes(
    controlplane: ControlPlane, operator: Operator
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    kubectl.apply(cluster(), ns)
    wait_ready(kubectl, ns)
    kubectl.run("annotate", "amc", "demo", "-n", ns, f"{naming.PAUSED_ANNOTATION}=true")
    wait_until(
        "phase Paused",
        lambda: (kubectl.get("amc", "demo", ns) or {})["status"]["phase"] == "Paused",
    )
    kubectl.run("delete", "service", "demo-router", "-n", ns)
    scale(kubectl, ns, 4)
    time.sleep(5)  # several resync periods
    assert kubectl.get("service", "demo-router", ns) is None
    assert kubectl.get("statefulset", "demo-shard-3", ns) is None
    kubectl.run("annotate", "amc", "demo", "-n", ns, f"{naming.PAUSED_ANNOTATION}-")
    wait_until("the router Service back", lambda: kubectl.get("service", "demo-router", ns))
    wait_until("shard 3", lambda: kubectl.get("statefulset", "demo-shard-3", ns))

    def rebalancing() -> bool:
        obj = kubectl.get("amc", "demo", ns) or {}
        reb = (obj.get("status") or {}).get("rebalance") or {}
        return reb.get("targetShards") == 4

    # (the rebalance then waits for shard 3's nodes, which kwok does not run)
    wait_until("the rebalance to 4 shards planned", rebalancing)


# 4.8 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "namespace",
    [
        {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }
    ],
    indirect=True,
)
def test_restricted_namespace_admits_the_pods(
    controlplane: ControlPlane, operator: Operator
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    labels = kubectl.json("get", "namespace", ns)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    kubectl.apply(cluster(), ns)
    wait_ready(kubectl, ns)
    pods = kubectl.items("pods", ns, "app.kubernetes.io/instance=demo")
    assert len(pods) == 3 * 2 + 2  # shard replicas and routers
    warnings = [
        e for e in kubectl.items("events", ns)
        if "violates PodSecurity" in e.get("message", "")
    ]  # fmt: skip
    assert not warnings


# 4.9 ------------------------------------------------------------------------


def test_hand_edits_are_restored_and_foreign_fields_kept(
    controlplane: ControlPlane, operator: Operator
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    kubectl.apply(cluster(), ns)
    wait_ready(kubectl, ns)
    kubectl.run(
        "patch", "pdb", "demo-shard-0", "-n", ns, "--type=merge",
        "-p", '{"spec": {"maxUnavailable": 2}}',
    )  # fmt: skip
    kubectl.run("annotate", "service", "demo", "-n", ns, "team.example.com/owner=ml-platform")
    wait_until(
        "maxUnavailable restored",
        lambda: (kubectl.get("pdb", "demo-shard-0", ns) or {})["spec"]["maxUnavailable"] == 1,
    )
    time.sleep(3)  # more reconciles
    svc = kubectl.json("get", "service", "demo", "-n", ns, "--show-managed-fields")
    assert svc["metadata"]["annotations"]["team.example.com/owner"] == "ml-platform"
    managers = {m["manager"] for m in svc["metadata"]["managedFields"]}
    assert "agentmem-operator" in managers


def _requests(metrics: dict[str, float]) -> dict[str, float]:
    prefix = "agentmem_operator_api_requests_total{"
    return {k: v for k, v in metrics.items() if k.startswith(prefix) and "watch" not in k}


def _reconciles(metrics: dict[str, float]) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("agentmem_operator_reconciles_total"))


def test_an_idle_cluster_costs_no_api_request_and_a_deleted_child_comes_back(
    controlplane: ControlPlane, operator: Operator
) -> None:
    """Reconciles read children from the operator's watches and send only writes
    that change something: once a cluster is Ready, its resyncs (every second
    here) send nothing; a child deleted by hand is seen by the watch and applied
    again."""
    kubectl, ns = controlplane.kubectl, operator.namespace
    kubectl.apply(cluster(), ns)
    wait_ready(kubectl, ns)

    def quiet() -> tuple[dict[str, float], dict[str, float]] | None:
        before = operator.metrics()
        time.sleep(3)
        after = operator.metrics()
        if _reconciles(after) - _reconciles(before) < 2:  # resyncs must have run
            return None
        return (before, after) if _requests(after) == _requests(before) else None

    before, after = wait_until("3 s of resyncs without a request", quiet, timeout=30, interval=0)
    skipped = "agentmem_operator_applies_skipped_total"
    assert after[skipped] - before[skipped] >= 2 * 15  # every child, every resync
    applies = 'agentmem_operator_api_requests_total{verb="apply"}'
    applied = operator.metrics()[applies]

    kubectl.run("delete", "service", "demo-router", "-n", ns)
    wait_until("the router Service back", lambda: kubectl.get("service", "demo-router", ns))
    assert 1 <= operator.metrics()[applies] - applied <= 3
    wait_ready(kubectl, ns)


def test_a_deleted_or_damaged_directory_comes_back_from_status(
    controlplane: ControlPlane, operator: Operator
) -> None:
    kubectl, ns = controlplane.kubectl, operator.namespace
    kubectl.apply(cluster(), ns)
    wait_ready(kubectl, ns)
    before = directory(kubectl, ns)
    assert before is not None and before.epoch == 1
    obj = kubectl.get("amc", "demo", ns)
    assert obj is not None and obj["status"]["directoryTable"] == list(before.table)
    kubectl.run("delete", "configmap", naming.directory_name("demo"), "-n", ns)
    after = wait_until("the directory again", lambda: directory(kubectl, ns))
    # the committed owners and epoch, from status: never recomputed
    assert (after.epoch, after.table) == (before.epoch, before.table)
    kubectl.run(
        "patch", "configmap", naming.directory_name("demo"), "-n", ns, "--type=merge",
        "-p", json.dumps({"data": {"directory.json": "{not json"}}),
    )  # fmt: skip
    again = wait_until(
        "the damaged directory to be restored",
        lambda: _valid_directory(kubectl, ns),
    )
    assert (again.epoch, again.table) == (before.epoch, before.table)
    wait_ready(kubectl, ns)


def _valid_directory(kubectl: Kubectl, ns: str) -> Directory | None:
    try:
        return directory(kubectl, ns)
    except ValueError:
        return None


def _stand_in_crd(kind: str, plural: str) -> dict[str, Any]:
    """A CRD of the Prometheus Operator's API group with an open schema: a stand-in for
    its own CRDs (not part of this test environment) that serves the same kind."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "scope": "Namespaced",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(),
                      "listKind": f"{kind}List"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                "openAPIV3Schema": {"type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True}}}],
        },
    }  # fmt: skip


def test_an_api_installed_after_the_operator_started_is_used_without_a_restart(
    controlplane: ControlPlane, namespace: str, tmp_path: Any
) -> None:
    """The Prometheus Operator installed after agentmem's: the operator looks again
    for the APIs it did not find (every second here, 5 minutes by default), creates
    the ServiceMonitor and PrometheusRule, and watches them (one deleted comes back)."""
    kubectl, ns = controlplane.kubectl, namespace
    op = Operator(
        controlplane, ns, tmp_path / "operator.log", env={"AGENTMEM_DISCOVERY_SECONDS": "1"}
    ).start()
    crds = [
        _stand_in_crd("ServiceMonitor", "servicemonitors"),
        _stand_in_crd("PrometheusRule", "prometheusrules"),
    ]
    try:
        kubectl.apply([cluster()], ns)
        wait_ready(kubectl, ns)
        assert kubectl.run("get", "servicemonitors", "-n", ns, check=False).returncode != 0
        kubectl.run("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                          "items": crds}))  # fmt: skip
        for kind in ("servicemonitor", "prometheusrule"):
            wait_until(f"the {kind}", lambda k=kind: kubectl.get(k, "demo", ns), timeout=60)
        monitor = kubectl.get("servicemonitor", "demo", ns)
        assert monitor is not None and monitor["spec"]["endpoints"][0]["port"] == "http"
        kubectl.run("delete", "servicemonitor", "demo", "-n", ns)
        wait_until("the ServiceMonitor back", lambda: kubectl.get("servicemonitor", "demo", ns))
        assert "now served: monitoring.coreos.com/v1" in op.log.read_text()
    except BaseException:
        print(f"--- operator log ---\n{op.tail()}")
        raise
    finally:
        op.stop()
        kubectl.run("delete", "namespace", ns, "--wait=true", "--timeout=60s", check=False)
        for crd in crds:
            kubectl.run("delete", "crd", crd["metadata"]["name"], "--wait=true", check=False)
