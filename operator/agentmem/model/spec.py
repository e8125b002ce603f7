"""The typed ``AgentMemoryCluster`` resource.

These models are the one source of truth for the custom resource: the CRD in
``crds/`` is generated from them (:mod:`agentmem.model.crd`), so defaults,
bounds, descriptions and CEL rules are written once, here. Field names are the
camelCase names of the API; Python code uses the snake_case attributes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from agentmem.model import naming

#: A Kubernetes resource quantity, e.g. ``250m``, ``1Gi``, ``2``.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
TOPIC_PATTERN = r"^[a-zA-Z0-9._-]+$"

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=32)]
#: A parameter of a Milvus index (M, efConstruction, nlist, ef, nprobe, ...).
IndexParam = Annotated[int, Field(ge=1, le=1_000_000)]
SecretName = Annotated[str, Field(pattern=DNS_LABEL_PATTERN, min_length=1, max_length=253)]
SecretKey = Annotated[str, Field(pattern=r"^[-._a-zA-Z0-9]+$", min_length=1, max_length=253)]


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; the message must name the field."""
    entry = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


def rules(*entries: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(entries)}


def nested(factory: Callable[[], Model], description: str) -> Any:
    """A sub-object field whose default is the factory's value.

    The CRD gets the same default, so the API server fills it in: ``{}`` when the
    factory is the model itself (its fields default one by one), else the values.
    """
    value = factory()
    default = {} if value == type(value)() else value.to_api()
    return Field(
        default_factory=factory, description=description, json_schema_extra={"default": default}
    )


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=False,
    )

    def to_api(self) -> dict[str, Any]:
        """The API representation (camelCase, no unset optional fields)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class ResourceList(Model):
    """Amounts of CPU and memory."""

    cpu: Quantity | None = Field(None, description="CPU, e.g. 250m or 2.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 256Mi or 2Gi.")


class Resources(Model):
    """Compute resources of a container: what the scheduler reserves and the ceiling."""

    requests: ResourceList = nested(ResourceList, "Resources the scheduler reserves.")
    limits: ResourceList = nested(ResourceList, "Upper bounds enforced at run time.")


def _resources(cpu: str, memory: str, memory_limit: str) -> Resources:
    return Resources(
        requests=ResourceList(cpu=cpu, memory=memory),
        limits=ResourceList(memory=memory_limit),
    )


class Persistence(Model):
    """Whether Redis keeps its data on a PersistentVolume across pod restarts."""

    enabled: bool = Field(
        False,
        description=(
            "Keep Redis data on a PersistentVolumeClaim. When false, Redis uses an emptyDir "
            "and a restarted pod rebuilds its state by replaying the event log."
        ),
    )
    size: Quantity = Field("2Gi", description="Size of each replica's volume claim.")
    storage_class_name: str | None = Field(
        None,
        max_length=253,
        description="StorageClass of the volume claims; the cluster default when unset.",
    )


class Cache(Model):
    """The Redis sidecar that holds the materialized state of a shard's partitions."""

    image: str = Field(
        "redis:7.4.2-alpine", min_length=1, max_length=512, description="Redis image."
    )
    memory_limit: Quantity = Field(
        "1Gi",
        description=(
            "Memory limit of the Redis container. Redis maxmemory is set to 75% of it, "
            "with the noeviction policy: writes are refused, never silently dropped, when full."
        ),
    )
    cpu_request: Quantity = Field("100m", description="CPU request of the Redis container.")
    persistence: Persistence = nested(Persistence, "Redis persistence across pod restarts.")


class Strimzi(Model):
    """How to reach the Strimzi Topic Operator that manages the event topic."""

    cluster_name: str | None = Field(
        None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description=(
            "Name of the Strimzi Kafka cluster; set as the strimzi.io/cluster label of the "
            "KafkaTopic. Required when topicManagement is strimzi."
        ),
    )
    api_version: Literal["v1beta2", "v1"] = Field(
        "v1beta2", description="API version of kafka.strimzi.io to create the KafkaTopic with."
    )


class TopicConfig(Model):
    """Configuration of the event topic. Events are deleted, never compacted."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.retentionBackstopHours) || !has(self.auditWindowHours) || "
                "self.retentionBackstopHours > self.auditWindowHours",
                "spec.eventLog.kafka.config.retentionBackstopHours must be greater than "
                "spec.eventLog.kafka.config.auditWindowHours",
                ".retentionBackstopHours",
            )
        )
    )

    audit_window_hours: int = Field(
        168,
        ge=1,
        le=87600,
        description=(
            "Hours of full history the log keeps (the agents' history endpoint reads it). "
            "With spec.store, agentmem truncates each partition behind the durable store but "
            "never inside this window; without a store the log is never truncated."
        ),
    )
    retention_backstop_hours: int = Field(
        720,
        ge=2,
        le=876000,
        description=(
            "The broker's own retention (retention.ms) when spec.store is set: a distant "
            "backstop only, agentmem truncates the log itself long before. Without a store "
            "the topic keeps every event (retention.ms=-1)."
        ),
    )
    segment_hours: int = Field(
        24,
        ge=1,
        le=8760,
        description="Hours after which a log segment is closed (segment.ms).",
    )
    max_message_bytes: int = Field(
        1048576,
        ge=1024,
        le=16777216,
        description="Largest event the topic accepts (max.message.bytes).",
    )
    extra: dict[str, str] = Field(
        default_factory=dict,
        max_length=64,
        description="Further topic configuration entries, passed through as they are.",
        json_schema_extra=rules(
            cel(
                "!('cleanup.policy' in self) && !('retention.ms' in self) && "
                "!('retention.bytes' in self) && !('min.compaction.lag.ms' in self)",
                "spec.eventLog.kafka.config.extra must not set cleanup.policy, retention.ms, "
                "retention.bytes or min.compaction.lag.ms: events are deleted only behind the "
                "durable store (see spec.eventLog.kafka.config.auditWindowHours and "
                "retentionBackstopHours)",
            )
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> TopicConfig:
        if self.retention_backstop_hours <= self.audit_window_hours:
            raise ValueError(
                "spec.eventLog.kafka.config.retentionBackstopHours must be greater than "
                "spec.eventLog.kafka.config.auditWindowHours"
            )
        return self


class SecretKeyRef(Model):
    """A key of a Secret in the cluster's namespace."""

    name: SecretName = Field(description="Name of the Secret.")
    key: SecretKey = Field(description="Key within the Secret.")


class Tls(Model):
    """TLS to the Kafka brokers."""

    enabled: bool = Field(False, description="Connect to the brokers over TLS.")
    ca_secret: SecretKeyRef | None = Field(
        None, description="CA certificate (PEM) that signed the brokers' certificates."
    )
    client_cert_secret: SecretKeyRef | None = Field(
        None, description="Client certificate (PEM) for mutual TLS."
    )
    client_key_secret: SecretKeyRef | None = Field(
        None, description="Client private key (PEM) for mutual TLS."
    )


class Sasl(Model):
    """SASL authentication to the Kafka brokers."""

    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "SCRAM-SHA-512", description="SASL mechanism."
    )
    secret_name: SecretName = Field(description="Secret holding the username and password.")
    username_key: SecretKey = Field("username", description="Key of the username in the Secret.")
    password_key: SecretKey = Field("password", description="Key of the password in the Secret.")


class Kafka(Model):
    """The Kafka cluster that holds the event log."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "self.topicManagement != 'strimzi' || "
                "(has(self.strimzi) && has(self.strimzi.clusterName))",
                "spec.eventLog.kafka.strimzi.clusterName is required when "
                "spec.eventLog.kafka.topicManagement is strimzi",
                ".strimzi.clusterName",
            ),
            cel(
                "self.minInSyncReplicas <= self.replicas",
                "spec.eventLog.kafka.minInSyncReplicas must not exceed "
                "spec.eventLog.kafka.replicas",
                ".minInSyncReplicas",
            ),
        )
    )

    bootstrap_servers: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[^,\s]+(,[^,\s]+)*$",
        description="Comma-separated host:port list of Kafka bootstrap servers.",
    )
    topic_management: Literal["strimzi", "direct", "external"] = Field(
        "strimzi",
        description=(
            "Who creates the event topic: strimzi (the operator creates a KafkaTopic for "
            "the Strimzi Topic Operator), direct (the operator creates it through the Kafka "
            "admin API), or external (it exists already; the operator checks it)."
        ),
    )
    topic_name: str | None = Field(
        None,
        pattern=TOPIC_PATTERN,
        max_length=249,
        description="Name of the event topic; agentmem.<namespace>.<cluster>.events when unset.",
    )
    strimzi: Strimzi = nested(Strimzi, "Strimzi settings for topicManagement strimzi.")
    replicas: int = Field(3, ge=1, le=16, description="Replication factor of the event topic.")
    min_in_sync_replicas: int = Field(
        2, ge=1, le=16, description="min.insync.replicas of the event topic (writes use acks=all)."
    )
    config: TopicConfig = nested(TopicConfig, "Configuration of the event topic.")
    tls: Tls = nested(Tls, "TLS to the brokers.")
    sasl: Sasl | None = Field(None, description="SASL authentication to the brokers.")

    @model_validator(mode="after")
    def _check(self) -> Kafka:
        # The same rules as the CEL validations above, for offline use (agentmem render).
        if self.topic_management == "strimzi" and not self.strimzi.cluster_name:
            raise ValueError(
                "spec.eventLog.kafka.strimzi.clusterName is required when "
                "spec.eventLog.kafka.topicManagement is strimzi"
            )
        if self.min_in_sync_replicas > self.replicas:
            raise ValueError(
                "spec.eventLog.kafka.minInSyncReplicas must not exceed spec.eventLog.kafka.replicas"
            )
        return self


class EventLog(Model):
    """Where the events (the source of truth) are stored."""

    kafka: Kafka = Field(description="The Kafka event log.")


SCHEMA_NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"


class StoreTls(Model):
    """TLS to the durable store (libpq's sslmode)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.mode) || !(self.mode in ['verify-ca', 'verify-full']) || "
                "has(self.caSecret)",
                "spec.store.tls.caSecret is required when spec.store.tls.mode is verify-ca or "
                "verify-full",
                ".caSecret",
            )
        )
    )

    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "prefer",
        description=(
            "disable, prefer (TLS when the server offers it), require, verify-ca or "
            "verify-full (check the server's certificate against caSecret, and its name)."
        ),
    )
    ca_secret: SecretKeyRef | None = Field(
        None, description="CA certificate (PEM) that signed the server's certificate."
    )

    @model_validator(mode="after")
    def _check(self) -> StoreTls:
        if self.mode in ("verify-ca", "verify-full") and self.ca_secret is None:
            raise ValueError(
                "spec.store.tls.caSecret is required when spec.store.tls.mode is verify-ca or "
                "verify-full"
            )
        return self


class Store(Model):
    """The durable store behind the event log (write-behind): PostgreSQL.

    Every replica writes the resolved facts of its partitions into it; a new
    replica warms up from it; the log is truncated behind it. CockroachDB speaks
    the same SQL and is meant to serve too.
    """

    url_secret: SecretKeyRef = Field(
        description=(
            "Secret key holding the connection URL, postgresql://user:password@host:5432/database."
        )
    )
    schema_name: str | None = Field(
        None,
        pattern=SCHEMA_NAME_PATTERN,
        max_length=63,
        description=(
            "Schema of this cluster's tables (one database serves many clusters); "
            "agentmem_<namespace>_<name> when unset. Created and migrated by the nodes."
        ),
    )
    pool_size: int = Field(4, ge=1, le=64, description="Connections each node keeps open.")
    tls: StoreTls = nested(StoreTls, "TLS to the store.")


class Dedup(Model):
    """How long retries with the same request id are recognised."""

    window_seconds: int = Field(
        600,
        ge=1,
        le=86400,
        description=(
            "How long a client-supplied X-Request-Id is remembered, by log time: size it to "
            "the clients' retry horizon. A retry after the window is applied again."
        ),
    )
    max_request_ids_per_partition: int = Field(
        50000,
        ge=100,
        le=10000000,
        description=(
            "Request ids a partition remembers at most (about 170 bytes each in Redis); a "
            "write with a new id beyond it is refused (503 too_many_request_ids) until older "
            "ids leave the window."
        ),
    )


class Toleration(Model):
    """A toleration of node taints, as in a pod spec."""

    key: str | None = Field(None, max_length=316, description="Taint key; empty matches all.")
    operator: Literal["Exists", "Equal"] | None = Field(
        None, description="Exists or Equal (the default)."
    )
    value: str | None = Field(None, max_length=63, description="Taint value to match.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        None, description="Taint effect to match; empty matches all."
    )
    toleration_seconds: int | None = Field(
        None, ge=0, le=31536000, description="How long a NoExecute taint is tolerated."
    )


class Placement(Model):
    """Where the memory nodes run."""

    zones: list[Annotated[str, Field(min_length=1, max_length=63)]] = Field(
        default_factory=list,
        max_length=16,
        description=(
            "Zones (topology.kubernetes.io/zone) the nodes may run in. Each shard's replicas "
            "are spread across them, and partitions are balanced across zones. Empty: any zone."
        ),
        json_schema_extra=rules(
            cel("self.all(z, self.exists_one(y, y == z))", "spec.placement.zones must be unique")
        ),
    )
    node_selector: dict[str, str] = Field(
        default_factory=dict, max_length=32, description="Node labels the pods require."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the pods."
    )
    affinity: dict[str, Any] | None = Field(
        None,
        description=(
            "Affinity of the pods (core/v1 Affinity). The zone requirement from zones is "
            "added to it."
        ),
    )


class Rebalance(Model):
    """How partitions move between shards when spec.shards changes."""

    auto_approve: bool = Field(
        True,
        description=(
            "Start a planned rebalance at once. When false, the plan waits in status until "
            "the annotation agentmem.io/approve-rebalance names its target epoch."
        ),
    )
    max_concurrent_moves: int = Field(
        8, ge=1, le=4096, description="Partitions warmed up and committed in one step."
    )
    step_interval_seconds: int = Field(
        0,
        ge=0,
        le=3600,
        description=(
            "Pause after each committed step before the next one starts, so clients and "
            "routers pick up every epoch before partitions move again."
        ),
    )
    warmup_timeout_seconds: int = Field(
        600,
        ge=10,
        le=86400,
        description=(
            "How long a step may wait for gaining shards to catch up before the cluster is "
            "Degraded (naming the pods that hold it up); it keeps waiting."
        ),
    )
    max_warmup_lag_events: int = Field(
        100,
        ge=0,
        le=1000000,
        description=(
            "A step commits when every replica of every gaining shard has seen the step's "
            "pending block and has applied each moving partition to within this many events "
            "of the log's end."
        ),
    )
    handoff_seconds: int = Field(
        60,
        ge=0,
        le=3600,
        description=(
            "How long a shard still serves a partition that moved away, while clients and "
            "routers pick up the new directory."
        ),
    )
    retire_grace_seconds: int = Field(
        120,
        ge=0,
        le=86400,
        description=(
            "A shard that leaves is deleted once every node and router follows the final "
            "epoch, or after this long (status says which)."
        ),
    )


class ServiceMonitorSpec(Model):
    """The Prometheus Operator ServiceMonitor of the memory nodes."""

    enabled: bool = Field(True, description="Create it when the monitoring.coreos.com API exists.")
    interval: str = Field(
        "30s", pattern=r"^[0-9]+(ms|s|m|h)$", max_length=16, description="Scrape interval."
    )


class PrometheusRuleSpec(Model):
    """The Prometheus Operator PrometheusRule with the cluster's alerts."""

    enabled: bool = Field(True, description="Create it when the monitoring.coreos.com API exists.")


class Thresholds(Model):
    """Alert thresholds."""

    read_latency_p99_ms: int = Field(
        120, ge=1, le=60000, description="Alert when p99 read latency exceeds this for 5 minutes."
    )
    miss_ratio_percent: int = Field(
        5,
        ge=0,
        le=100,
        description=(
            "Alert when more than this percentage of reads miss the state: refused because "
            "their partition was being loaded, rebuilt or warmed up (state is exact in Redis, "
            "so a miss is a read the node could not answer)."
        ),
    )
    event_lag_ms: int = Field(
        50, ge=1, le=3600000, description="Alert when applied events lag the log by more than this."
    )
    redis_memory_percent: int = Field(
        85, ge=1, le=100, description="Alert when Redis uses more than this share of maxmemory."
    )
    store_lag_seconds: int = Field(
        60,
        ge=1,
        le=86400,
        description="Alert when the durable store is more than this behind the events applied.",
    )
    index_lag_seconds: int = Field(
        30,
        ge=1,
        le=86400,
        description="Alert when the vector index is more than this behind the events applied.",
    )


class Monitoring(Model):
    """Prometheus integration."""

    service_monitor: ServiceMonitorSpec = nested(
        ServiceMonitorSpec, "ServiceMonitor of the memory nodes."
    )
    prometheus_rule: PrometheusRuleSpec = nested(
        PrometheusRuleSpec, "PrometheusRule with the alerts."
    )
    thresholds: Thresholds = nested(Thresholds, "Alert thresholds.")
    otlp_endpoint: str | None = Field(
        None,
        pattern=r"^https?://",
        max_length=1024,
        description=(
            "Export traces of the memory nodes and routers over OTLP/HTTP to this URL, e.g. "
            "http://otel-collector.observability.svc:4318/v1/traces; none: no traces."
        ),
    )


class Disruption(Model):
    """Voluntary disruption budget of each shard."""

    max_unavailable: int = Field(
        1,
        ge=0,
        le=9,
        description="Replicas of a shard that may be down at once for voluntary disruptions.",
    )


class Router(Model):
    """The stateless router Deployment in front of the memory nodes."""

    replicas: int = Field(2, ge=0, le=100, description="Router replicas; 0 disables the router.")
    resources: Resources = nested(
        lambda: _resources("100m", "128Mi", "256Mi"),
        "Compute resources of a router container.",
    )


Scope = Literal["read", "write", "admin", "status", "metrics"]
AgentPattern = Annotated[str, Field(pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]*\*?$", max_length=129)]


class ServiceAccountGrant(Model):
    """What the projected token of one Kubernetes service account may do."""

    namespace: str | None = Field(
        None,
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
        description="Namespace of the service account (default: the cluster's).",
    )
    name: str = Field(
        pattern=DNS_LABEL_PATTERN.replace("[-a-z0-9]", "[-.a-z0-9]"),
        min_length=1,
        max_length=253,
        description="Name of the service account.",
    )
    tenant: str | None = Field(
        None,
        pattern=r"^(\*|[a-zA-Z0-9][a-zA-Z0-9._-]*)$",
        max_length=128,
        description="The tenant it may reach, or * for every tenant; none for cluster scopes only.",
    )
    agents: list[AgentPattern] | None = Field(
        None,
        max_length=100,
        description="Only these agents of the tenant (a trailing * makes a prefix); default: all.",
    )
    scopes: list[Scope] = Field(
        min_length=1,
        max_length=5,
        description=(
            "read, write, admin (read and write) on the tenant; status (nodes' /v1/status) and "
            "metrics (/metrics) on the cluster."
        ),
    )


class TrustedIssuer(Model):
    """Another issuer whose tokens (with this cluster's audience) count."""

    issuer: str = Field(min_length=1, max_length=512, description="The tokens' iss claim, exactly.")
    jwks_url: str = Field(
        pattern=r"^https://",
        max_length=1024,
        description="Where the nodes fetch its signing keys (JWKS); refetched every 5 minutes.",
    )


class Auth(Model):
    """Who may use the cluster: bearer tokens (JWT) on every data-plane request."""

    enabled: bool = Field(
        True,
        description=(
            "Require a token on every request. Turning it off leaves every tenant open to "
            "whoever reaches the pods."
        ),
    )
    kubernetes_issuer: bool = Field(
        True,
        description=(
            "Accept the API server's service-account tokens whose audience is "
            "agentmem.io/<namespace>/<cluster> (a projected token; automounted ones are refused)."
        ),
    )
    service_accounts: list[ServiceAccountGrant] = Field(
        default_factory=list,
        max_length=1000,
        description="Grants of service accounts (their tokens carry no agentmem claims).",
    )
    issuers: list[TrustedIssuer] = Field(
        default_factory=list, max_length=20, description="Other trusted issuers (OIDC providers)."
    )


class ClusterTls(Model):
    """TLS between clients, routers and nodes, with certificates of the operator's CA."""

    enabled: bool = Field(
        True,
        description=(
            "HTTPS for clients (router and nodes) and mutual TLS from the router to the nodes. "
            "The operator keeps a CA in the Secret <cluster>-ca and the certificate of nodes "
            "and routers in <cluster>-tls, renewed 30 days before it expires."
        ),
    )


class TenantQuota(Model):
    """Limits of one tenant on each memory node (0: none)."""

    writes_per_second: int = Field(
        0, ge=0, le=1_000_000, description="Writes per second a node admits for the tenant."
    )
    burst: int = Field(
        0, ge=0, le=10_000_000, description="Writes above the rate admitted at once (0: the rate)."
    )
    watchers: int = Field(
        0, ge=0, le=100_000, description="Concurrent watch streams of the tenant on a node."
    )
    stored_bytes: int = Field(
        0,
        ge=0,
        le=2**50,
        description=(
            "Bytes of the tenant's live values in the whole cluster, as the durable store "
            "counts them every usageIntervalSeconds; over it, writes other than deletes are "
            "refused (needs spec.store)."
        ),
    )


class TenantQuotaOverride(TenantQuota):
    """The limits of one named tenant (they replace the default limits for it)."""

    tenant: str = Field(
        pattern=r"^[a-zA-Z0-9][a-zA-Z0-9._-]*$", max_length=128, description="The tenant."
    )


class ClientBounds(Model):
    """What one client (a token's subject) may hold on a node at once."""

    waiting: int = Field(256, ge=1, le=100_000, description="Reads waiting for a version.")
    watchers: int = Field(32, ge=1, le=10_000, description="Watch streams.")
    history: int = Field(4, ge=1, le=1_000, description="History pages in flight.")


class Quotas(Model):
    """Per-tenant quotas and per-client bounds; over one: 429 with Retry-After."""

    default: TenantQuota = nested(TenantQuota, "Limits of every tenant not listed.")
    tenants: list[TenantQuotaOverride] = Field(
        default_factory=list, max_length=10_000, description="Limits of named tenants."
    )
    client: ClientBounds = nested(ClientBounds, "Bounds of each client on each node.")
    usage_interval_seconds: int = Field(
        30, ge=1, le=3600, description="How often the tenants' stored bytes are counted."
    )

    def to_node(self) -> str:
        """The nodes' AGENTMEM_QUOTAS (JSON)."""
        tenants = {
            t.tenant: {k: v for k, v in t.to_api().items() if k != "tenant"} for t in self.tenants
        }
        return json.dumps(
            {
                "default": self.default.to_api(),
                "tenants": tenants,
                "client": self.client.to_api(),
                "usageIntervalSeconds": self.usage_interval_seconds,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


class Embedder(Model):
    """What turns a write's text (and a search's query) into a vector, once, on the
    node that accepts it (the vector travels in the event)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.kind) || self.kind != 'openai' || has(self.url)",
                "spec.semantic.embedder.url is required when kind is openai",
                ".url",
            ),
        )
    )

    kind: Literal["none", "openai", "hashing"] = Field(
        "none",
        description=(
            "none: clients send vectors; openai: an OpenAI-compatible POST {url}/embeddings "
            "(OpenAI, vLLM, Ollama, text-embeddings-inference, ...); hashing: a deterministic "
            "lexical embedder without a model (tests and demos)."
        ),
    )
    url: str | None = Field(
        None, pattern=r"^https?://", max_length=1024, description="Base URL, e.g. https://host/v1."
    )
    model: str | None = Field(None, max_length=256, description="The model to ask for.")
    api_key_secret: SecretKeyRef | None = Field(
        None, description="Secret key holding the endpoint's API key (sent as a bearer token)."
    )
    timeout_seconds: int = Field(10, ge=1, le=300, description="Per request to the endpoint.")


class VectorIndex(Model):
    """The Milvus index of the vectors."""

    type: Literal["HNSW", "IVF_FLAT", "IVF_SQ8", "FLAT", "AUTOINDEX"] = Field(
        "HNSW", description="Index type (Milvus's names)."
    )
    params: dict[str, IndexParam] | None = Field(
        None,
        max_length=8,
        description="Build parameters (HNSW: M 16, efConstruction 200; IVF: nlist 1024).",
    )
    search_params: dict[str, IndexParam] | None = Field(
        None,
        max_length=8,
        description="Search parameters (HNSW: ef 128; IVF: nprobe 32).",
    )


class Semantic(Model):
    """Semantic memory: a vector index in Milvus fed from the event log, searchable
    with the same consistency as reads. The operator does not install Milvus."""

    milvus_uri: str = Field(
        pattern=r"^(https?|tcp)://",
        max_length=1024,
        description="The Milvus server, e.g. http://milvus.milvus.svc:19530.",
    )
    token_secret: SecretKeyRef | None = Field(
        None, description="Secret key holding Milvus's token (user:password, or an API key)."
    )
    database: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=255, description="Milvus database."
    )
    collection: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        max_length=200,
        description="Collection of this cluster's vectors; agentmem_<namespace>_<name> when unset.",
    )
    dimensions: int = Field(ge=2, le=32768, description="Dimensions of every vector.")
    metric: Literal["COSINE", "IP", "L2"] = Field("COSINE", description="Similarity metric.")
    index: VectorIndex = nested(VectorIndex, "The vector index.")
    embedder: Embedder = nested(Embedder, "The embedder.")

    def collection_name(self, namespace: str, name: str) -> str:
        return self.collection or f"agentmem_{namespace}_{name}".replace("-", "_").replace(".", "_")


class AgentMemoryClusterSpec(Model):
    """Desired state of an agentmem cluster."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "self.shards <= self.partitions",
                "spec.shards must not exceed spec.partitions",
                ".shards",
            ),
        )
    )

    shards: int = Field(
        3,
        ge=1,
        le=naming.MAX_SHARDS,
        description="Number of shards. Changing it rebalances partitions between shards.",
    )
    replicas_per_shard: int = Field(
        2, ge=1, le=9, description="Memory-node replicas of each shard (pods of its StatefulSet)."
    )
    partitions: int = Field(
        64,
        ge=1,
        le=naming.MAX_PARTITIONS,
        description=(
            "Partitions of the key space and of the event topic. Fixed when the cluster is "
            "created: it cannot be changed."
        ),
        json_schema_extra=rules(cel("self == oldSelf", "spec.partitions is immutable")),
    )
    image: str = Field(
        "agentmem/agentmem:0.1.0",
        min_length=1,
        max_length=512,
        description="agentmem image of the memory nodes and routers.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="Pull policy of the agentmem image."
    )
    resources: Resources = nested(
        lambda: _resources("250m", "256Mi", "512Mi"),
        "Compute resources of a memory-node container.",
    )
    cache: Cache = nested(Cache, "The Redis sidecar of each node.")
    event_log: EventLog = Field(description="The event log (Kafka).")
    store: Store | None = Field(
        None,
        description=(
            "The durable store behind the log. Without it the event log is the state: it is "
            "never truncated and replicas warm up by replaying it from the start."
        ),
    )
    dedup: Dedup = nested(Dedup, "Request-id deduplication.")
    placement: Placement = nested(Placement, "Where the memory nodes run.")
    rebalance: Rebalance = nested(Rebalance, "How partitions move on a change of shards.")
    consistency: Literal["eventual", "session", "strong"] = Field(
        "session",
        description=(
            "Default read consistency for clients: eventual (local state), session "
            "(read-your-writes with a version token) or strong (caught up to the log end)."
        ),
    )
    monitoring: Monitoring = nested(Monitoring, "Prometheus.")
    disruption: Disruption = nested(Disruption, "Disruption budget of each shard.")
    router: Router = nested(Router, "The router Deployment.")
    auth: Auth = nested(Auth, "Authentication and authorization of requests.")
    quotas: Quotas = nested(Quotas, "Per-tenant quotas and per-client bounds.")
    tls: ClusterTls = nested(ClusterTls, "TLS on the data path.")
    semantic: Semantic | None = Field(
        None,
        description=(
            "Semantic memory (vector search over memories) in a Milvus server; none: off. "
            "docs/semantic.md."
        ),
    )

    @model_validator(mode="after")
    def _check(self) -> AgentMemoryClusterSpec:
        if self.shards > self.partitions:
            raise ValueError("spec.shards must not exceed spec.partitions")
        return self
