"""The memory node's Prometheus metrics (names from :mod:`agentmem.model.naming`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentmem.model import naming

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.12, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class NodeMetrics:
    """One registry per node, labelled with the cluster and the shard."""

    def __init__(self, cluster: str, shard: int) -> None:
        self.registry = CollectorRegistry()
        labels = {naming.LABEL_CLUSTER_METRIC: cluster, "shard": str(shard)}
        names = list(labels)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=self.registry).labels(**labels)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=self.registry).labels(**labels)

        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(
                name, doc, names, registry=self.registry, buckets=_LATENCY_BUCKETS
            ).labels(**labels)

        self.read_latency = histogram(naming.METRIC_READ_LATENCY, "Time to serve a read.")
        self.write_latency = histogram(
            naming.METRIC_WRITE_LATENCY, "Time from a write's arrival to its applied outcome."
        )
        self.hits = counter(
            naming.METRIC_CACHE_HITS, "Key lookups served from the node's record cache."
        )
        self.misses = counter(
            naming.METRIC_CACHE_MISSES, "Key lookups that had to read the state store."
        )
        self.event_lag_seconds = gauge(
            naming.METRIC_EVENT_LAG_SECONDS,
            "Age of the newest applied event while behind the log end (0 when caught up).",
        )
        self.event_lag_messages = gauge(
            naming.METRIC_EVENT_LAG_MESSAGES, "Events in the log not yet applied here."
        )
        self.redis_used = gauge(naming.METRIC_REDIS_USED, "Memory the state store uses.")
        self.redis_max = gauge(naming.METRIC_REDIS_MAX, "The state store's memory limit.")
        self.events_applied = counter(
            "memory_node_events_applied_total", "Events applied to the state store."
        )
        self.store_resets = counter(
            "memory_node_store_resets_total", "Times the state store was found emptied and rebuilt."
        )
        self.rejected_full = counter(
            "memory_node_writes_rejected_full_total", "Writes refused because the store is full."
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
