"""Every builder against the structure it must produce (no cluster involved)."""

from __future__ import annotations

from typing import Any

import pytest

from agentmem import __version__
from agentmem.model import AgentMemoryCluster
from agentmem.resources import (
    children,
    client_service,
    directory_configmap,
    directory_from_configmap,
    initial_directory,
    kafka_topic,
    network_policy,
    prometheus_rule,
    redis_maxmemory,
    router_deployment,
    router_network_policy,
    router_service,
    service_account,
    service_monitor,
    shard_pdb,
    shard_service,
    shard_statefulset,
    topic_config,
)
from agentmem.semantic import SemanticConfig
from tests.unit.test_crd import merge


@pytest.fixture
def cluster(example: dict[str, Any]) -> AgentMemoryCluster:
    example["metadata"]["namespace"] = "team-a"
    return AgentMemoryCluster.from_api(example)


def with_spec(example: dict[str, Any], **spec: Any) -> AgentMemoryCluster:
    return AgentMemoryCluster.from_api(merge(example, {"spec": spec}))


EXPECTED_LABELS = {
    "app.kubernetes.io/name": "agentmem",
    "app.kubernetes.io/instance": "demo",
    "app.kubernetes.io/part-of": "agentmem",
    "app.kubernetes.io/managed-by": "agentmem-operator",
    "app.kubernetes.io/version": __version__,
    "agentmem.io/cluster": "demo",
}


def test_every_child_has_the_recommended_labels(cluster: AgentMemoryCluster) -> None:
    for child in children(cluster):
        labels = child["metadata"]["labels"]
        assert EXPECTED_LABELS.items() <= labels.items(), child["kind"]
        assert labels["app.kubernetes.io/component"]
        assert child["metadata"]["namespace"] == "team-a"


def test_statefulset(cluster: AgentMemoryCluster) -> None:
    sts = shard_statefulset(cluster, 1)
    assert sts["metadata"]["name"] == "demo-shard-1"
    spec = sts["spec"]
    assert spec["replicas"] == 2
    assert spec["serviceName"] == "demo-shard-1"
    assert spec["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "agentmem",
        "app.kubernetes.io/instance": "demo",
        "app.kubernetes.io/component": "memory-node",
        "agentmem.io/shard": "1",
    }
    pod = spec["template"]["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "fsGroup": 10001,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    (redis,) = pod["initContainers"]
    (node,) = pod["containers"]
    assert redis["restartPolicy"] == "Always"  # native sidecar
    assert redis["name"] == "redis"
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--bind") + 1] == "127.0.0.1"
    assert command[command.index("--maxmemory") + 1] == str(int(0.75 * 2**30))
    assert redis["resources"]["limits"]["memory"] == "1Gi"
    for container in (redis, node):
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["runAsNonRoot"] is True
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"startupProbe", "readinessProbe", "livenessProbe"} <= container.keys()
        assert container["resources"]["requests"] and container["resources"]["limits"]
    assert node["args"] == ["node"]
    assert node["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "http",
        "scheme": "HTTPS",
    }
    env = {e["name"]: e.get("value") for e in node["env"]}
    assert env["AGENTMEM_SHARD"] == "1"
    assert env["AGENTMEM_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert env["AGENTMEM_TOPIC"] == "agentmem.team-a.demo.events"
    assert env["AGENTMEM_KAFKA_SECURITY_PROTOCOL"] == "PLAINTEXT"
    # the node follows the directory through the mounted ConfigMap (no API access)
    assert env["AGENTMEM_DIRECTORY_FILE"] == "/etc/agentmem/directory/directory.json"
    assert {"name": "directory", "mountPath": "/etc/agentmem/directory", "readOnly": True} in (
        node["volumeMounts"]
    )
    assert {
        "name": "directory",
        "configMap": {"name": "demo-directory", "defaultMode": 0o444},
    } in pod["volumes"]
    zone_spread, host_spread = pod["topologySpreadConstraints"]
    assert zone_spread["topologyKey"] == "topology.kubernetes.io/zone"
    assert zone_spread["whenUnsatisfiable"] == "DoNotSchedule"
    assert zone_spread["matchLabelKeys"] == ["controller-revision-hash"]
    assert zone_spread["labelSelector"]["matchLabels"]["agentmem.io/shard"] == "1"
    assert host_spread["topologyKey"] == "kubernetes.io/hostname"
    required = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required["nodeSelectorTerms"][0]["matchExpressions"] == [
        {
            "key": "topology.kubernetes.io/zone",
            "operator": "In",
            "values": ["zone-a", "zone-b", "zone-c"],
        }
    ]
    preferred = pod["affinity"]["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["preference"]["matchExpressions"][0]["values"] == ["zone-b"]
    assert {"name": "data", "emptyDir": {"sizeLimit": "1Gi"}} in pod["volumes"]
    assert "volumeClaimTemplates" not in spec


def test_statefulset_without_zones_spreads_softly(example: dict[str, Any]) -> None:
    cluster = with_spec(example, placement={"zones": []})
    pod = shard_statefulset(cluster, 0)["spec"]["template"]["spec"]
    assert pod["topologySpreadConstraints"][0]["whenUnsatisfiable"] == "ScheduleAnyway"
    assert "affinity" not in pod


def test_statefulset_with_persistence(example: dict[str, Any]) -> None:
    cluster = with_spec(
        example,
        cache={"persistence": {"enabled": True, "size": "5Gi", "storageClassName": "fast"}},
    )
    spec = shard_statefulset(cluster, 0)["spec"]
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"] == {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "5Gi"}},
        "storageClassName": "fast",
    }
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"
    redis = spec["template"]["spec"]["initContainers"][0]
    assert redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert all(v["name"] != "data" for v in spec["template"]["spec"]["volumes"])


def test_kafka_tls_and_sasl(example: dict[str, Any]) -> None:
    kafka = {
        "bootstrapServers": "k:9093",
        "topicManagement": "external",
        "topicName": "Agent_Events",
        "tls": {"enabled": True, "caSecret": {"name": "kafka-ca", "key": "ca.crt"}},
        "sasl": {"mechanism": "SCRAM-SHA-512", "secretName": "kafka-user"},
    }
    cluster = with_spec(example, eventLog={"kafka": kafka})
    pod = shard_statefulset(cluster, 0)["spec"]["template"]["spec"]
    node = pod["containers"][0]
    env = {e["name"]: e for e in node["env"]}
    assert env["AGENTMEM_KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["AGENTMEM_KAFKA_SSL_CA_LOCATION"]["value"] == "/etc/agentmem/kafka-tls/ca.crt"
    assert env["AGENTMEM_KAFKA_SASL_PASSWORD"]["valueFrom"] == {
        "secretKeyRef": {"name": "kafka-user", "key": "password"}
    }
    assert env["AGENTMEM_TOPIC"]["value"] == "Agent_Events"
    tls = next(v for v in pod["volumes"] if v["name"] == "kafka-tls")
    assert tls["projected"]["sources"] == [
        {"secret": {"name": "kafka-ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
    ]
    assert all(c["kind"] != "KafkaTopic" for c in children(cluster))


def test_headless_service_and_pdb(cluster: AgentMemoryCluster) -> None:
    svc = shard_service(cluster, 2)
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["selector"]["agentmem.io/shard"] == "2"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 7070, "targetPort": "http", "protocol": "TCP"}
    ]
    pdb = shard_pdb(cluster, 2)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["agentmem.io/shard"] == "2"


def test_client_and_router(cluster: AgentMemoryCluster) -> None:
    client = client_service(cluster)
    assert client["metadata"]["name"] == "demo"
    assert "agentmem.io/shard" not in client["spec"]["selector"]
    assert client["spec"]["selector"]["app.kubernetes.io/component"] == "memory-node"
    deployment = router_deployment(cluster)
    assert deployment["metadata"]["name"] == "demo-router"
    assert deployment["spec"]["replicas"] == 2
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["router"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert router_service(cluster)["spec"]["selector"]["app.kubernetes.io/component"] == "router"


def test_router_can_be_disabled(example: dict[str, Any]) -> None:
    cluster = with_spec(example, router={"replicas": 0})
    kinds = {(c["kind"], c["metadata"]["name"]) for c in children(cluster)}
    assert ("Deployment", "demo-router") not in kinds


def test_nodes_and_routers_hold_no_api_access(cluster: AgentMemoryCluster) -> None:
    """They read their directory and issuers from mounted files: no token, no Role."""
    account = service_account(cluster)
    assert account["metadata"]["name"] == "demo-node"
    assert account["automountServiceAccountToken"] is False
    kinds = {c["kind"] for c in children(cluster)}
    assert not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}
    for child in children(cluster):
        if child["kind"] in ("StatefulSet", "Deployment"):
            pod = child["spec"]["template"]["spec"]
            assert pod["automountServiceAccountToken"] is False, child["metadata"]["name"]


def test_network_policies_open_only_http_and_nodes_only_to_their_callers(
    cluster: AgentMemoryCluster,
) -> None:
    spec = network_policy(cluster)["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "memory-node"
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "http"}]
    peers = [p["podSelector"]["matchLabels"] for p in rule["from"]]
    assert peers[0]["app.kubernetes.io/component"] == "router"
    assert "namespaceSelector" not in rule["from"][0]  # the cluster's own routers only
    assert {"app.kubernetes.io/name": "agentmem-operator"} in peers
    assert {"agentmem.io/client": "demo"} in peers
    router = router_network_policy(cluster)["spec"]
    assert router["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
    assert router["ingress"] == [{"ports": [{"protocol": "TCP", "port": "http"}]}]


def test_directory_configmap_round_trips(cluster: AgentMemoryCluster) -> None:
    directory = initial_directory(cluster)
    cm = directory_configmap(cluster, directory)
    assert cm["metadata"]["name"] == "demo-directory"
    assert cm["metadata"]["annotations"] == {"agentmem.io/epoch": "1"}
    assert directory_from_configmap(cm) == directory
    assert directory.epoch == 1
    assert len(directory.table) == 64 and set(directory.table) == {0, 1, 2}
    assert [s.zone for s in directory.shards] == ["zone-a", "zone-b", "zone-c"]
    assert directory.shards[0].endpoint == "demo-shard-0.team-a.svc:7070"


@pytest.mark.parametrize("version", ["v1beta2", "v1"])
def test_kafka_topic(example: dict[str, Any], version: str) -> None:
    cluster = with_spec(
        example,
        eventLog={
            "kafka": {
                "bootstrapServers": "k:9092",
                "strimzi": {"clusterName": "my-kafka", "apiVersion": version},
                "config": {"auditWindowHours": 24, "extra": {"compression.type": "zstd"}},
            }
        },
    )
    topic = kafka_topic(cluster)
    assert topic["apiVersion"] == f"kafka.strimzi.io/{version}"
    assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "my-kafka"
    assert topic["metadata"]["name"] == "agentmem.default.demo.events"
    assert topic["spec"]["partitions"] == 64
    assert topic["spec"]["replicas"] == 3
    assert "topicName" not in topic["spec"]
    assert topic["spec"]["config"] == topic_config(cluster)
    assert topic_config(cluster) == {
        "cleanup.policy": "delete",
        "message.timestamp.type": "LogAppendTime",
        "retention.ms": "-1",  # no durable store: the log is the state
        "retention.bytes": "-1",
        "segment.ms": str(24 * 3600 * 1000),
        "max.message.bytes": "1048576",
        "min.insync.replicas": "2",
        "compression.type": "zstd",
    }


def test_a_durable_store_is_wired_into_the_nodes_and_bounds_the_topic(
    example: dict[str, Any],
) -> None:
    cluster = with_spec(
        example,
        store={
            "urlSecret": {"name": "pg", "key": "url"},
            "schemaName": "memory_demo",
            "tls": {"mode": "verify-full", "caSecret": {"name": "pg-ca", "key": "ca.crt"}},
        },
        dedup={"windowSeconds": 120},
    )
    config = topic_config(cluster)
    assert config["cleanup.policy"] == "delete"
    assert config["retention.ms"] == str(720 * 3600 * 1000)  # the backstop
    assert "min.compaction.lag.ms" not in config
    pod = shard_statefulset(cluster, 0)["spec"]["template"]["spec"]
    node = pod["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in node["env"]}
    assert env["AGENTMEM_STORE_URL"] == {"secretKeyRef": {"name": "pg", "key": "url"}}
    assert env["AGENTMEM_STORE_SCHEMA"] == "memory_demo"
    assert env["AGENTMEM_STORE_OPTIONS"] == (
        "sslmode=verify-full,sslrootcert=/etc/agentmem/store-tls/ca.crt"
    )
    assert env["AGENTMEM_DEDUP_WINDOW_SECONDS"] == "120"
    assert env["AGENTMEM_AUDIT_WINDOW_SECONDS"] == str(168 * 3600)
    assert {"name": "store-tls", "mountPath": "/etc/agentmem/store-tls", "readOnly": True} in (
        node["volumeMounts"]
    )
    volume = next(v for v in pod["volumes"] if v["name"] == "store-tls")
    assert volume["secret"] == {
        "secretName": "pg-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    without = shard_statefulset(with_spec(example), 0)["spec"]["template"]["spec"]
    names = {e["name"] for e in without["containers"][0]["env"]}
    assert not any(n.startswith("AGENTMEM_STORE") for n in names)


def test_topic_name_that_is_not_a_kubernetes_name(example: dict[str, Any]) -> None:
    kafka = {
        "bootstrapServers": "k:9092",
        "topicName": "Agent_Events",
        "strimzi": {"clusterName": "k"},
    }
    topic = kafka_topic(with_spec(example, eventLog={"kafka": kafka}))
    assert topic["metadata"]["name"] == "agent-events"
    assert topic["spec"]["topicName"] == "Agent_Events"


def test_service_monitor(cluster: AgentMemoryCluster, example: dict[str, Any]) -> None:
    sm = service_monitor(cluster)
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint == {
        "port": "http", "path": "/metrics", "interval": "30s",
        # Prometheus holds a metrics token and the cluster's CA: /metrics wants both.
        "authorization": {"type": "Bearer",
                          "credentials": {"name": "demo-metrics", "key": "token"}},
        "scheme": "https",
        "tlsConfig": {"ca": {"secret": {"name": "demo-tls", "key": "ca.crt"}},
                      "serverName": "demo.team-a.svc"},
    }  # fmt: skip
    plain = service_monitor(with_spec(example, auth={"enabled": False}, tls={"enabled": False}))
    assert plain["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    selector = sm["spec"]["selector"]["matchLabels"]
    scraped = [
        c for c in children(cluster)
        if c["kind"] == "Service" and selector.items() <= c["metadata"]["labels"].items()
    ]  # fmt: skip
    assert sorted(s["metadata"]["name"] for s in scraped) == ["demo", "demo-router"]


def test_prometheus_rule_thresholds(example: dict[str, Any]) -> None:
    cluster = with_spec(example, monitoring={"thresholds": {"readLatencyP99Ms": 200}})
    rules = {r["alert"]: r for r in prometheus_rule(cluster)["spec"]["groups"][0]["rules"]}
    # What each rule does is tested by promtool on synthetic series
    # (tests/controlplane/test_alert_rules.py); here: the spec's thresholds reach them.
    assert set(rules) == {
        "AgentMemReadLatencyHigh",
        "AgentMemReadsMissingState",
        "AgentMemEventLagHigh",
        "AgentMemStoreLagHigh",
        "AgentMemIndexLagHigh",
        "AgentMemRedisMemoryHigh",
    }
    assert rules["AgentMemReadLatencyHigh"]["expr"].endswith("> 0.2")
    assert rules["AgentMemReadLatencyHigh"]["for"] == "5m"


def test_monitoring_objects_follow_the_api_and_the_spec(example: dict[str, Any]) -> None:
    cluster = AgentMemoryCluster.from_api(example)
    kinds = [c["kind"] for c in children(cluster)]
    assert "ServiceMonitor" in kinds and "PrometheusRule" in kinds
    kinds = [c["kind"] for c in children(cluster, monitoring_api=False)]
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    off = with_spec(example, monitoring={"prometheusRule": {"enabled": False}})
    assert "PrometheusRule" not in [c["kind"] for c in children(off)]


def test_children_for_explicit_shards(cluster: AgentMemoryCluster) -> None:
    names = [
        c["metadata"]["name"]
        for c in children(cluster, shards={0, 4})
        if c["kind"] == "StatefulSet"
    ]
    assert names == ["demo-shard-0", "demo-shard-4"]


def test_redis_maxmemory_parses_quantities(example: dict[str, Any]) -> None:
    assert redis_maxmemory(with_spec(example, cache={"memoryLimit": "512Mi"})) == 402653184
    assert redis_maxmemory(with_spec(example, cache={"memoryLimit": "1G"})) == 750_000_000


def test_semantic_memory_is_wired_into_the_nodes(example: dict[str, Any]) -> None:
    cluster = with_spec(
        example,
        semantic={
            "milvusUri": "http://milvus.milvus.svc:19530",
            "tokenSecret": {"name": "milvus", "key": "token"},
            "dimensions": 768,
            "metric": "IP",
            "index": {"type": "HNSW", "params": {"M": 32}, "searchParams": {"ef": 64}},
            "embedder": {
                "kind": "openai",
                "url": "https://llm.example/v1",
                "model": "nomic-embed",
                "apiKeySecret": {"name": "llm", "key": "api-key"},
            },
        },
    )
    pod = shard_statefulset(cluster, 0)["spec"]["template"]["spec"]
    node = pod["containers"][0]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in node["env"]}
    config = SemanticConfig.from_json(env["AGENTMEM_SEMANTIC"])
    assert config is not None  # the node reads what the operator renders
    assert (config.uri, config.dimensions, config.metric) == (
        "http://milvus.milvus.svc:19530", 768, "IP",
    )  # fmt: skip
    assert config.collection == f"agentmem_{cluster.namespace}_{cluster.name}".replace("-", "_")
    assert config.index_params == {"M": 32} and config.search_params == {"ef": 64}
    assert config.token_file == "/etc/agentmem/milvus/token"
    assert config.embedder.api_key_file == "/etc/agentmem/embedder/key"
    assert config.embedder.url == "https://llm.example/v1" and config.writer == "auto"
    mounts = {m["name"]: m["mountPath"] for m in node["volumeMounts"]}
    assert mounts["milvus-token"] == "/etc/agentmem/milvus"
    assert mounts["embedder-key"] == "/etc/agentmem/embedder"
    volumes = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert volumes["embedder-key"]["items"] == [{"key": "api-key", "path": "key"}]
    without = shard_statefulset(with_spec(example), 0)["spec"]["template"]["spec"]
    assert "AGENTMEM_SEMANTIC" not in {e["name"] for e in without["containers"][0]["env"]}


def test_traces_go_where_the_spec_says(example: dict[str, Any]) -> None:
    endpoint = "http://otel-collector.observability.svc:4318/v1/traces"
    cluster = with_spec(example, monitoring={"otlpEndpoint": endpoint})
    node = shard_statefulset(cluster, 0)["spec"]["template"]["spec"]["containers"][0]
    router = next(c for c in children(cluster) if c["kind"] == "Deployment")
    for container in (node, router["spec"]["template"]["spec"]["containers"][0]):
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["AGENTMEM_OTLP_ENDPOINT"] == endpoint
    plain = shard_statefulset(with_spec(example), 0)["spec"]["template"]["spec"]["containers"][0]
    assert "AGENTMEM_OTLP_ENDPOINT" not in {e["name"] for e in plain["env"]}
