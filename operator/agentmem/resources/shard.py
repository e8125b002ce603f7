"""One shard: a StatefulSet of memory nodes with Redis sidecars, its headless
Service and its PodDisruptionBudget."""

from __future__ import annotations

import json
from typing import Any

from agentmem.model import AgentMemoryCluster, naming
from agentmem.model.spec import SecretKeyRef
from agentmem.resources._meta import container_security, metadata, pod_security, resources
from agentmem.resources._quantity import to_bytes
from agentmem.resources.directory import shard_zone

#: Share of the Redis container's memory limit given to Redis as maxmemory; the
#: rest covers Redis's own overhead (buffers, fragmentation, Lua).
REDIS_MAXMEMORY_SHARE = 0.75

TLS_MOUNT = "/etc/agentmem/kafka-tls"
STORE_TLS_MOUNT = "/etc/agentmem/store-tls"
DIRECTORY_MOUNT = "/etc/agentmem/directory"


AUTH_MOUNT = "/etc/agentmem/auth"
AUDIT_MOUNT = "/etc/agentmem/audit"
MILVUS_MOUNT = "/etc/agentmem/milvus"
EMBEDDER_MOUNT = "/etc/agentmem/embedder"
SERVING_TLS_MOUNT = "/etc/agentmem/tls"


def config_volumes(cluster: AgentMemoryCluster) -> list[dict[str, Any]]:
    """The directory ConfigMap and, with auth on, the trusted issuers, as files.

    The kubelet refreshes them when the ConfigMaps change; nodes and routers
    reread them (a new epoch, a rotated key) without a restart.
    """
    volumes: list[dict[str, Any]] = [
        {
            "name": "directory",
            "configMap": {"name": naming.directory_name(cluster.name), "defaultMode": 0o444},
        }
    ]
    if cluster.spec.tls.enabled:
        volumes.append(
            {
                "name": "serving-tls",
                "secret": {"secretName": naming.tls_name(cluster.name), "defaultMode": 0o440},
            }
        )
    if cluster.spec.auth.enabled:
        volumes.append(
            {
                "name": "auth",
                "configMap": {"name": naming.auth_name(cluster.name), "defaultMode": 0o444},
            }
        )
    return volumes


def config_mounts(cluster: AgentMemoryCluster) -> list[dict[str, Any]]:
    mounts = [{"name": "directory", "mountPath": DIRECTORY_MOUNT, "readOnly": True}]
    if cluster.spec.tls.enabled:
        mounts.append({"name": "serving-tls", "mountPath": SERVING_TLS_MOUNT, "readOnly": True})
    if cluster.spec.auth.enabled:
        mounts.append({"name": "auth", "mountPath": AUTH_MOUNT, "readOnly": True})
    return mounts


def redis_maxmemory(cluster: AgentMemoryCluster) -> int:
    return int(to_bytes(cluster.spec.cache.memory_limit) * REDIS_MAXMEMORY_SHARE)


def _tls_files(cluster: AgentMemoryCluster) -> list[tuple[SecretKeyRef, str, str]]:
    """(secret key, file name, environment variable) of each configured TLS file."""
    tls = cluster.spec.event_log.kafka.tls
    if not tls.enabled:
        return []
    files = [
        (tls.ca_secret, "ca.crt", "AGENTMEM_KAFKA_SSL_CA_LOCATION"),
        (tls.client_cert_secret, "tls.crt", "AGENTMEM_KAFKA_SSL_CERTIFICATE_LOCATION"),
        (tls.client_key_secret, "tls.key", "AGENTMEM_KAFKA_SSL_KEY_LOCATION"),
    ]
    return [(ref, path, var) for ref, path, var in files if ref is not None]


def kafka_env(cluster: AgentMemoryCluster) -> list[dict[str, Any]]:
    """Environment that tells a node or router how to reach Kafka (TLS, SASL)."""
    kafka = cluster.spec.event_log.kafka
    protocol = ("SASL_" if kafka.sasl else "") + ("SSL" if kafka.tls.enabled else "PLAINTEXT")
    env: list[dict[str, Any]] = [
        {"name": "AGENTMEM_KAFKA_BOOTSTRAP_SERVERS", "value": kafka.bootstrap_servers},
        {"name": "AGENTMEM_TOPIC", "value": cluster.topic},
        {"name": "AGENTMEM_KAFKA_SECURITY_PROTOCOL", "value": protocol},
    ]
    env += [{"name": var, "value": f"{TLS_MOUNT}/{path}"} for _, path, var in _tls_files(cluster)]
    if kafka.sasl:
        env.append({"name": "AGENTMEM_KAFKA_SASL_MECHANISM", "value": kafka.sasl.mechanism})
        for var, key in (
            ("AGENTMEM_KAFKA_SASL_USERNAME", kafka.sasl.username_key),
            ("AGENTMEM_KAFKA_SASL_PASSWORD", kafka.sasl.password_key),
        ):
            secret = {"secretKeyRef": {"name": kafka.sasl.secret_name, "key": key}}
            env.append({"name": var, "valueFrom": secret})
    return env


def tls_volume(cluster: AgentMemoryCluster) -> dict[str, Any] | None:
    """A projected volume with the Kafka TLS files, when TLS is on."""
    sources = [
        {"secret": {"name": ref.name, "items": [{"key": ref.key, "path": path}]}}
        for ref, path, _ in _tls_files(cluster)
    ]
    if not sources:
        return None
    return {"name": "kafka-tls", "projected": {"sources": sources, "defaultMode": 0o440}}


def store_env(cluster: AgentMemoryCluster) -> list[dict[str, Any]]:
    """How a node reaches the durable store (nothing without spec.store)."""
    store = cluster.spec.store
    if store is None:
        return []
    options = [f"sslmode={store.tls.mode}"]
    if store.tls.ca_secret is not None:
        options.append(f"sslrootcert={STORE_TLS_MOUNT}/ca.crt")
    env: list[dict[str, Any]] = [
        {
            "name": "AGENTMEM_STORE_URL",
            "valueFrom": {
                "secretKeyRef": {"name": store.url_secret.name, "key": store.url_secret.key}
            },
        },
        {"name": "AGENTMEM_STORE_POOL_SIZE", "value": str(store.pool_size)},
        {"name": "AGENTMEM_STORE_OPTIONS", "value": ",".join(options)},
    ]
    if store.schema_name:
        env.append({"name": "AGENTMEM_STORE_SCHEMA", "value": store.schema_name})
    return env


def store_tls_volume(cluster: AgentMemoryCluster) -> dict[str, Any] | None:
    """The store's CA certificate as a file, when the spec names one."""
    store = cluster.spec.store
    if store is None or store.tls.ca_secret is None:
        return None
    ref = store.tls.ca_secret
    return {
        "name": "store-tls",
        "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": "ca.crt"}]},
    }


def audit_volume(cluster: AgentMemoryCluster) -> dict[str, Any] | None:
    """The audit chain's signing key, with a durable store (its checkpoints live there).

    Every replica mounts it; replica 0 of each shard signs (AGENTMEM_AUDIT_SIGNER auto).
    """
    if cluster.spec.store is None:
        return None
    return {
        "name": "audit",
        "secret": {
            "secretName": naming.audit_name(cluster.name),
            "items": [{"key": "audit.pem", "path": "audit.pem"}],
            "defaultMode": 0o440,
        },
    }


def semantic_env(cluster: AgentMemoryCluster) -> list[dict[str, Any]]:
    """The node's AGENTMEM_SEMANTIC (agentmem.semantic.SemanticConfig), with spec.semantic."""
    semantic = cluster.spec.semantic
    if semantic is None:
        return []
    index: dict[str, Any] = {"type": semantic.index.type}
    if semantic.index.params:
        index["params"] = semantic.index.params
    if semantic.index.search_params:
        index["searchParams"] = semantic.index.search_params
    embedder = semantic.embedder
    embedder_config: dict[str, Any] = {
        "kind": embedder.kind,
        "timeoutSeconds": embedder.timeout_seconds,
    }
    if embedder.url:
        embedder_config["url"] = embedder.url
    if embedder.model:
        embedder_config["model"] = embedder.model
    if embedder.api_key_secret is not None:
        embedder_config["apiKeyFile"] = f"{EMBEDDER_MOUNT}/key"
    config: dict[str, Any] = {
        "uri": semantic.milvus_uri,
        "dimensions": semantic.dimensions,
        "metric": semantic.metric,
        "collection": semantic.collection_name(cluster.namespace, cluster.name),
        "index": index,
        "embedder": embedder_config,
    }
    if semantic.token_secret is not None:
        config["tokenFile"] = f"{MILVUS_MOUNT}/token"
    if semantic.database:
        config["dbName"] = semantic.database
    return [{"name": "AGENTMEM_SEMANTIC", "value": json.dumps(config, sort_keys=True)}]


def semantic_volumes(cluster: AgentMemoryCluster) -> list[tuple[dict[str, Any], str]]:
    """The Milvus token and the embedder's API key as files: (volume, mount path)."""
    semantic = cluster.spec.semantic
    if semantic is None:
        return []
    out = []
    for name, ref, mount, path in (
        ("milvus-token", semantic.token_secret, MILVUS_MOUNT, "token"),
        ("embedder-key", semantic.embedder.api_key_secret, EMBEDDER_MOUNT, "key"),
    ):
        if ref is not None:
            volume = {
                "name": name,
                "secret": {"secretName": ref.name, "items": [{"key": ref.key, "path": path}],
                           "defaultMode": 0o440},
            }  # fmt: skip
            out.append((volume, mount))
    return out


def common_env(cluster: AgentMemoryCluster) -> list[dict[str, Any]]:
    """What every agentmem container needs to find its cluster."""
    env: list[dict[str, Any]] = [
        {"name": "AGENTMEM_CLUSTER", "value": cluster.name},
        {
            "name": "AGENTMEM_NAMESPACE",
            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
        },
        {"name": "AGENTMEM_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "AGENTMEM_DIRECTORY", "value": naming.directory_name(cluster.name)},
        {
            "name": "AGENTMEM_DIRECTORY_FILE",
            "value": f"{DIRECTORY_MOUNT}/{naming.DIRECTORY_KEY}",
        },
        {"name": "AGENTMEM_PARTITIONS", "value": str(cluster.spec.partitions)},
        {"name": "AGENTMEM_CONSISTENCY", "value": cluster.spec.consistency},
    ]
    if cluster.spec.auth.enabled:
        env.append({"name": "AGENTMEM_AUTH_FILE", "value": f"{AUTH_MOUNT}/{naming.AUTH_KEY}"})
    else:
        env.append({"name": "AGENTMEM_NO_AUTH", "value": "true"})
    if cluster.spec.tls.enabled:
        env += [
            {"name": f"AGENTMEM_TLS_{name.upper()}", "value": f"{SERVING_TLS_MOUNT}/{file}"}
            for name, file in (("cert", "tls.crt"), ("key", "tls.key"), ("ca", "ca.crt"))
        ]
    endpoint = cluster.spec.monitoring.otlp_endpoint
    if endpoint:
        env.append({"name": "AGENTMEM_OTLP_ENDPOINT", "value": endpoint})
    return env


def http_probe(
    cluster: AgentMemoryCluster, path: str, period: int, failures: int
) -> dict[str, Any]:
    """A kubelet probe (over HTTPS with TLS on: the kubelet does not check the certificate,
    and the probes need no client certificate)."""
    scheme = "HTTPS" if cluster.spec.tls.enabled else "HTTP"
    return {
        "httpGet": {"path": path, "port": "http", "scheme": scheme},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _redis_probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["redis-cli", "-h", "127.0.0.1", "-p", str(naming.REDIS_PORT), "ping"]},
        "periodSeconds": period,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def redis_container(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """Redis as a native sidecar: an init container with ``restartPolicy: Always``.

    It listens on loopback only; nothing outside the pod reaches it.
    """
    cache = cluster.spec.cache
    persistent = cache.persistence.enabled
    command = [
        "redis-server",
        "--bind", "127.0.0.1",
        "--port", str(naming.REDIS_PORT),
        "--protected-mode", "yes",
        "--maxmemory", str(redis_maxmemory(cluster)),
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--appendonly", "yes" if persistent else "no",
        "--appendfsync", "everysec",
        "--dir", "/data",
    ]  # fmt: skip
    return {
        "name": "redis",
        "image": cache.image,
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "command": command,
        "ports": [{"name": "redis", "containerPort": naming.REDIS_PORT, "protocol": "TCP"}],
        "startupProbe": _redis_probe(period=2, failures=30),
        "readinessProbe": _redis_probe(period=5, failures=3),
        "livenessProbe": _redis_probe(period=10, failures=3),
        "resources": {
            "requests": {"cpu": cache.cpu_request, "memory": cache.memory_limit},
            "limits": {"memory": cache.memory_limit},
        },
        "securityContext": container_security(),
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }


def node_container(cluster: AgentMemoryCluster, shard: int) -> dict[str, Any]:
    spec = cluster.spec
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": "/tmp"}, *config_mounts(cluster)]
    if tls_volume(cluster) is not None:
        mounts.append({"name": "kafka-tls", "mountPath": TLS_MOUNT, "readOnly": True})
    if store_tls_volume(cluster) is not None:
        mounts.append({"name": "store-tls", "mountPath": STORE_TLS_MOUNT, "readOnly": True})
    audit_env: list[dict[str, Any]] = []
    if audit_volume(cluster) is not None:
        mounts.append({"name": "audit", "mountPath": AUDIT_MOUNT, "readOnly": True})
        audit_env = [{"name": "AGENTMEM_AUDIT_KEY_FILE", "value": f"{AUDIT_MOUNT}/audit.pem"}]
    for volume, mount in semantic_volumes(cluster):
        mounts.append({"name": volume["name"], "mountPath": mount, "readOnly": True})
    kafka_config = spec.event_log.kafka.config
    return {
        "name": "memory-node",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": ["node"],
        "ports": [{"name": "http", "containerPort": naming.NODE_PORT, "protocol": "TCP"}],
        "env": [
            *common_env(cluster),
            {"name": "AGENTMEM_SHARD", "value": str(shard)},
            {"name": "AGENTMEM_LISTEN", "value": f"0.0.0.0:{naming.NODE_PORT}"},
            {"name": "AGENTMEM_REDIS_URL", "value": f"redis://127.0.0.1:{naming.REDIS_PORT}/0"},
            {"name": "AGENTMEM_CLUSTER_UID", "value": cluster.metadata.uid},
            {"name": "AGENTMEM_DEDUP_WINDOW_SECONDS", "value": str(spec.dedup.window_seconds)},
            {"name": "AGENTMEM_QUOTAS", "value": spec.quotas.to_node()},
            *audit_env,
            {
                "name": "AGENTMEM_MAX_REQUEST_IDS",
                "value": str(spec.dedup.max_request_ids_per_partition),
            },
            {
                "name": "AGENTMEM_AUDIT_WINDOW_SECONDS",
                "value": str(kafka_config.audit_window_hours * 3600),
            },
            {"name": "AGENTMEM_HANDOFF_SECONDS", "value": str(spec.rebalance.handoff_seconds)},
            *kafka_env(cluster),
            *store_env(cluster),
            *semantic_env(cluster),
        ],
        "startupProbe": http_probe(cluster, "/livez", period=2, failures=60),
        "readinessProbe": http_probe(cluster, "/readyz", period=5, failures=3),
        "livenessProbe": http_probe(cluster, "/livez", period=10, failures=3),
        "resources": resources(spec.resources),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def _affinity(cluster: AgentMemoryCluster, shard: int) -> dict[str, Any] | None:
    """The user's affinity plus the zone requirement and the shard's home zone."""
    placement = cluster.spec.placement
    affinity: dict[str, Any] = dict(placement.affinity or {})
    if not placement.zones:
        return affinity or None
    node_affinity: dict[str, Any] = dict(affinity.get("nodeAffinity") or {})
    zone_requirement = {"key": naming.ZONE_LABEL, "operator": "In", "values": list(placement.zones)}
    required = dict(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = [dict(t) for t in required.get("nodeSelectorTerms") or [{}]]
    for term in terms:
        term["matchExpressions"] = [*(term.get("matchExpressions") or []), zone_requirement]
    required["nodeSelectorTerms"] = terms
    node_affinity["requiredDuringSchedulingIgnoredDuringExecution"] = required
    # The shard's home zone (its zone in the directory) is preferred, so a
    # single-replica shard lands where the directory says it is.
    home = {
        "weight": 50,
        "preference": {
            "matchExpressions": [
                {"key": naming.ZONE_LABEL, "operator": "In", "values": [shard_zone(cluster, shard)]}
            ]
        },
    }
    preferred = list(node_affinity.get("preferredDuringSchedulingIgnoredDuringExecution") or [])
    node_affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [*preferred, home]
    affinity["nodeAffinity"] = node_affinity
    return affinity


def _spread(cluster: AgentMemoryCluster, shard: int) -> list[dict[str, Any]]:
    """A shard's replicas spread over zones (hard when zones are listed) and nodes."""
    selector = {"matchLabels": naming.shard_selector_labels(cluster.name, shard)}
    zone_rule = "DoNotSchedule" if cluster.spec.placement.zones else "ScheduleAnyway"
    return [
        {
            "maxSkew": 1,
            "topologyKey": naming.ZONE_LABEL,
            "whenUnsatisfiable": zone_rule,
            "labelSelector": selector,
            "matchLabelKeys": ["controller-revision-hash"],
        },
        {
            "maxSkew": 1,
            "topologyKey": naming.HOSTNAME_LABEL,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": selector,
            "matchLabelKeys": ["controller-revision-hash"],
        },
    ]


def shard_statefulset(cluster: AgentMemoryCluster, shard: int) -> dict[str, Any]:
    """The StatefulSet ``<cluster>-shard-<i>``."""
    spec = cluster.spec
    name = naming.shard_name(cluster.name, shard)
    selector = naming.shard_selector_labels(cluster.name, shard)
    meta = metadata(cluster, name, naming.COMPONENT_NODE, **{naming.LABEL_SHARD: str(shard)})
    volumes: list[dict[str, Any]] = [
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        *config_volumes(cluster),
    ]
    for extra in (tls_volume(cluster), store_tls_volume(cluster), audit_volume(cluster)):
        if extra is not None:
            volumes.append(extra)
    volumes += [volume for volume, _ in semantic_volumes(cluster)]
    claims: list[dict[str, Any]] = []
    persistence = spec.cache.persistence
    if persistence.enabled:
        claim_spec: dict[str, Any] = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": persistence.size}},
        }
        if persistence.storage_class_name:
            claim_spec["storageClassName"] = persistence.storage_class_name
        claims.append({"metadata": {"name": "data", "labels": dict(selector)}, "spec": claim_spec})
    else:
        volumes.append({"name": "data", "emptyDir": {"sizeLimit": spec.cache.memory_limit}})
    pod_spec: dict[str, Any] = {
        "serviceAccountName": naming.node_account_name(cluster.name),
        # Nodes read their directory and issuers from mounted files: no API access.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": 30,
        "initContainers": [redis_container(cluster)],
        "containers": [node_container(cluster, shard)],
        "topologySpreadConstraints": _spread(cluster, shard),
        "volumes": volumes,
    }
    affinity = _affinity(cluster, shard)
    if affinity:
        pod_spec["affinity"] = affinity
    if spec.placement.node_selector:
        pod_spec["nodeSelector"] = dict(spec.placement.node_selector)
    if spec.placement.tolerations:
        pod_spec["tolerations"] = [t.to_api() for t in spec.placement.tolerations]
    sts_spec: dict[str, Any] = {
        "replicas": spec.replicas_per_shard,
        "serviceName": name,
        "podManagementPolicy": "Parallel",
        "updateStrategy": {"type": "RollingUpdate"},
        "revisionHistoryLimit": 5,
        "selector": {"matchLabels": selector},
        "template": {
            "metadata": {
                "labels": dict(meta["labels"]),
                "annotations": {"kubectl.kubernetes.io/default-container": "memory-node"},
            },
            "spec": pod_spec,
        },
    }
    if claims:
        sts_spec["volumeClaimTemplates"] = claims
        # The event log is the source of truth: a deleted shard's volumes go too.
        sts_spec["persistentVolumeClaimRetentionPolicy"] = {
            "whenDeleted": "Delete",
            "whenScaled": "Retain",
        }
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta, "spec": sts_spec}


def shard_service(cluster: AgentMemoryCluster, shard: int) -> dict[str, Any]:
    """The headless Service that names a shard's pods in DNS."""
    name = naming.shard_name(cluster.name, shard)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(
            cluster, name, naming.COMPONENT_NODE, **{naming.LABEL_SHARD: str(shard)}
        ),
        "spec": {
            "clusterIP": "None",
            "selector": naming.shard_selector_labels(cluster.name, shard),
            "ports": [
                {"name": "http", "port": naming.NODE_PORT, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def shard_pdb(cluster: AgentMemoryCluster, shard: int) -> dict[str, Any]:
    name = naming.shard_name(cluster.name, shard)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(
            cluster, name, naming.COMPONENT_NODE, **{naming.LABEL_SHARD: str(shard)}
        ),
        "spec": {
            "maxUnavailable": cluster.spec.disruption.max_unavailable,
            "selector": {"matchLabels": naming.shard_selector_labels(cluster.name, shard)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }
