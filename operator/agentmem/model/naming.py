"""Every name, label and port of an agentmem cluster comes from here.

Child names are templates over the cluster name. A cluster name must leave room
for the longest child name: a shard StatefulSet ``<cluster>-shard-<i>`` gets a
``controller-revision-hash`` label ``<statefulset>-<10 chars>`` on its pods, and
label values are at most 63 characters. :data:`MAX_CLUSTER_NAME_LENGTH` is
derived from that, and the CRD enforces it.
"""

from __future__ import annotations

from typing import Final

GROUP: Final = "agentmem.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "AgentMemoryCluster"
PLURAL: Final = "agentmemoryclusters"
SINGULAR: Final = "agentmemorycluster"
SHORT_NAMES: Final = ("amc",)

FIELD_MANAGER: Final = "agentmem-operator"

# Annotations a user may set on an AgentMemoryCluster.
PAUSED_ANNOTATION: Final = f"{GROUP}/paused"
APPROVE_ANNOTATION: Final = f"{GROUP}/approve-rebalance"

# Recommended labels (app.kubernetes.io/*) and the project's own.
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
#: Pods with this label (value: the cluster's name) may reach its memory nodes.
CLIENT_LABEL: Final = "agentmem.io/client"
LABEL_PART_OF: Final = "app.kubernetes.io/part-of"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_VERSION: Final = "app.kubernetes.io/version"
LABEL_CLUSTER: Final = f"{GROUP}/cluster"
LABEL_SHARD: Final = f"{GROUP}/shard"
STRIMZI_CLUSTER_LABEL: Final = "strimzi.io/cluster"

APP_NAME: Final = "agentmem"

COMPONENT_NODE: Final = "memory-node"
COMPONENT_ROUTER: Final = "router"
COMPONENT_DIRECTORY: Final = "directory"
COMPONENT_EVENT_LOG: Final = "event-log"
COMPONENT_MONITORING: Final = "monitoring"
COMPONENT_ACCESS: Final = "access"

# Ports. Redis listens on loopback inside the pod only.
NODE_PORT: Final = 7070
ROUTER_PORT: Final = 7070
REDIS_PORT: Final = 6379

DIRECTORY_KEY: Final = "directory.json"
AUTH_KEY: Final = "auth.json"

ZONE_LABEL: Final = "topology.kubernetes.io/zone"
HOSTNAME_LABEL: Final = "kubernetes.io/hostname"

# Upper bounds that the CRD enforces and the name budget depends on.
MAX_SHARDS: Final = 256
MAX_PARTITIONS: Final = 4096

_LABEL_VALUE_MAX: Final = 63
_REVISION_HASH_SUFFIX: Final = 11  # "-" + 10 characters, added by the StatefulSet controller
_SHARD_INFIX: Final = "-shard-"

#: The longest cluster name that leaves room for every child name.
MAX_CLUSTER_NAME_LENGTH: Final = (
    _LABEL_VALUE_MAX - _REVISION_HASH_SUFFIX - len(_SHARD_INFIX) - len(str(MAX_SHARDS - 1))
)


def shard_name(cluster: str, shard: int) -> str:
    """The StatefulSet, headless Service and PodDisruptionBudget of one shard."""
    return f"{cluster}{_SHARD_INFIX}{shard}"


def client_service_name(cluster: str) -> str:
    """The Service in front of every memory node of the cluster."""
    return cluster


def router_name(cluster: str) -> str:
    """The router Deployment and its Service."""
    return f"{cluster}-router"


def directory_name(cluster: str) -> str:
    """The ConfigMap that holds the shard directory."""
    return f"{cluster}-directory"


def audience(namespace: str, cluster: str) -> str:
    """The audience a token must name to be accepted by a cluster."""
    return f"agentmem.io/{namespace}/{cluster}"


def auth_name(cluster: str) -> str:
    """The ConfigMap of trusted token issuers, and the Secret of the operator's signing key."""
    return f"{cluster}-auth"


def audit_name(cluster: str) -> str:
    """The Secret of the audit chain's signing key."""
    return f"{cluster}-audit"


def metrics_token_name(cluster: str) -> str:
    """The Secret with the token Prometheus scrapes ``/metrics`` with."""
    return f"{cluster}-metrics"


def ca_name(cluster: str) -> str:
    """The Secret of the cluster's CA (certificate and key), made by the operator."""
    return f"{cluster}-ca"


def tls_name(cluster: str) -> str:
    """The Secret of the nodes' and routers' certificate (tls.crt, tls.key, ca.crt)."""
    return f"{cluster}-tls"


def node_account_name(cluster: str) -> str:
    """ServiceAccount, Role and RoleBinding of the memory nodes and routers."""
    return f"{cluster}-node"


def network_policy_name(cluster: str) -> str:
    return f"{cluster}-node"


def monitoring_name(cluster: str) -> str:
    """ServiceMonitor and PrometheusRule."""
    return cluster


def default_topic_name(cluster: str, namespace: str) -> str:
    """The event topic when the spec names none: unique per namespace and cluster."""
    return f"agentmem.{namespace}.{cluster}.events"


def kafka_topic_resource_name(topic: str) -> str:
    """A Kubernetes object name for a Kafka topic name (dots and underscores allowed there)."""
    return topic.lower().replace("_", "-")


def selector_labels(cluster: str, component: str) -> dict[str, str]:
    """Labels that select a component's pods; never change them on a live object."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: cluster, LABEL_COMPONENT: component}


def shard_selector_labels(cluster: str, shard: int) -> dict[str, str]:
    return {**selector_labels(cluster, COMPONENT_NODE), LABEL_SHARD: str(shard)}


def common_labels(cluster: str, component: str, version: str) -> dict[str, str]:
    """The recommended labels every child carries."""
    return {
        **selector_labels(cluster, component),
        LABEL_PART_OF: APP_NAME,
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_VERSION: version,
        LABEL_CLUSTER: cluster,
    }


# Metric names: the memory nodes export them, the PrometheusRule alerts on them.
METRIC_READ_LATENCY: Final = "memory_node_read_latency_seconds"
METRIC_WRITE_LATENCY: Final = "memory_node_write_latency_seconds"
METRIC_CACHE_HITS: Final = "memory_node_cache_hits_total"
METRIC_CACHE_MISSES: Final = "memory_node_cache_misses_total"
METRIC_EVENT_LAG_SECONDS: Final = "memory_node_event_lag_seconds"
METRIC_EVENT_LAG_MESSAGES: Final = "memory_node_event_lag_messages"
METRIC_REDIS_USED: Final = "memory_node_redis_used_memory_bytes"
METRIC_REDIS_MAX: Final = "memory_node_redis_max_memory_bytes"
METRIC_STORE_LAG_MESSAGES: Final = "memory_node_store_lag_messages"
METRIC_STORE_LAG_SECONDS: Final = "memory_node_store_lag_seconds"
METRIC_INDEX_LAG_SECONDS: Final = "memory_node_index_lag_seconds"
METRIC_PARTITION_LAG_MESSAGES: Final = "memory_node_partition_lag_messages"
METRIC_PARTITION_LAG_SECONDS: Final = "memory_node_partition_lag_seconds"
METRIC_READS_REFUSED: Final = "memory_node_reads_refused_rebuilding_total"
METRIC_REQUESTS: Final = "memory_node_requests_total"

#: Label on the Services that the ServiceMonitor scrapes.
SCRAPE_LABEL: Final = f"{GROUP}/scrape"

#: Label every memory-node metric carries with the cluster name.
LABEL_CLUSTER_METRIC: Final = "cluster"
