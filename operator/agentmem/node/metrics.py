"""The memory node's Prometheus metrics (names from :mod:`agentmem.model.naming`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agentmem.model import naming

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.12, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_DELAY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


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

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, names, registry=self.registry, buckets=buckets).labels(
                **labels
            )

        self.read_latency = histogram(
            naming.METRIC_READ_LATENCY, "Time to serve a read.", _LATENCY_BUCKETS
        )
        self.write_latency = histogram(
            naming.METRIC_WRITE_LATENCY,
            "Time from a write's arrival to its applied outcome.",
            _LATENCY_BUCKETS,
        )
        self.hits = counter(
            naming.METRIC_CACHE_HITS, "Key lookups served from the node's record cache."
        )
        self.misses = counter(
            naming.METRIC_CACHE_MISSES, "Key lookups that had to read the state store."
        )
        self.event_lag_seconds = gauge(
            naming.METRIC_EVENT_LAG_SECONDS,
            "Age of the oldest event in the log not yet applied here (0 when caught up).",
        )
        self.event_lag_messages = gauge(
            naming.METRIC_EVENT_LAG_MESSAGES, "Events in the log not yet applied here."
        )
        self.redis_used = gauge(naming.METRIC_REDIS_USED, "Memory the state store uses.")
        self.redis_max = gauge(naming.METRIC_REDIS_MAX, "The state store's memory limit.")
        self.events_applied = counter(
            "memory_node_events_applied_total", "Events applied to the state store."
        )
        self.state_resets = counter(
            "memory_node_store_resets_total", "Times the state store was found emptied and rebuilt."
        )
        self.rejected_full = counter(
            "memory_node_writes_rejected_full_total", "Writes refused because the store is full."
        )
        self.reads_refused = counter(
            naming.METRIC_READS_REFUSED,
            "Reads refused because their partition was being loaded, rebuilt or warmed up "
            "(the state could not answer them exactly).",
        )
        partition_labels = [*names, "partition"]
        self._partition_lag_messages = Gauge(
            naming.METRIC_PARTITION_LAG_MESSAGES,
            "Events of the partition in the log (up to its high watermark) not yet applied here.",
            partition_labels, registry=self.registry,
        )  # fmt: skip
        self._partition_lag_seconds = Gauge(
            naming.METRIC_PARTITION_LAG_SECONDS,
            "Age of the partition's oldest event not yet applied here (0 when caught up).",
            partition_labels, registry=self.registry,
        )  # fmt: skip
        self._labels = labels
        self._requests = Counter(
            naming.METRIC_REQUESTS,
            "Requests answered, by kind (read, write, search, list, history, watch, status, "
            "other) and HTTP status code.",
            [*names, "kind", "code"], registry=self.registry,
        )  # fmt: skip
        self.waiters = gauge(
            "memory_node_waiting_requests", "Requests waiting for an offset or an outcome."
        )
        self.ticks = counter(
            "memory_node_ticks_total", "Tick events appended to expire keys on idle partitions."
        )
        self.loads = counter(
            "memory_node_partition_loads_total", "Partitions loaded from the durable store."
        )
        self.load_seconds = histogram(
            "memory_node_partition_load_seconds",
            "Time to load a partition from the durable store.",
            _DELAY_BUCKETS,
        )
        self.store_writes = counter(
            "memory_node_store_writes_total", "Batches this node committed to the durable store."
        )
        self.store_write_delay = histogram(
            "memory_node_store_write_delay_seconds",
            "From the log time of a batch's first event to its commit in the durable store.",
            _DELAY_BUCKETS,
        )
        self.store_catch_up_events = counter(
            "memory_node_store_catch_up_events_total",
            "Events read from the log again to bring the durable store up to date.",
        )
        self.store_lag_messages = gauge(
            naming.METRIC_STORE_LAG_MESSAGES,
            "Events applied here that the durable store does not reflect yet.",
        )
        self.store_lag_seconds = gauge(
            naming.METRIC_STORE_LAG_SECONDS,
            "Age of the oldest event applied here that the durable store does not reflect.",
        )
        self.history_scanned = counter(
            "memory_node_history_scanned_events_total",
            "Log events read to answer history and watch catch-up.",
        )
        self.high_watermark_queries = counter(
            "memory_node_high_watermark_queries_total",
            "Queries of the log's end for strong reads (shared by concurrent reads).",
        )
        self.log_truncations = counter(
            "memory_node_log_truncations_total",
            "Times this node removed log events the durable store reflects.",
        )

        self.index_writes = counter(
            "memory_node_index_writes_total",
            "Batches of events this node reflected in the vector index (it is the writer).",
        )
        self.index_catch_up_events = counter(
            "memory_node_index_catch_up_events_total",
            "Events read again from the log for the vector index (after a restart or a gap).",
        )
        self.index_lag_messages = gauge(
            "memory_node_index_lag_messages",
            "Events applied here that the vector index does not reflect yet (writer only).",
        )
        self.index_lag_seconds = gauge(
            naming.METRIC_INDEX_LAG_SECONDS,
            "Age of the oldest event applied here that the vector index does not reflect.",
        )
        self.index_delay = histogram(
            "memory_node_index_delay_seconds",
            "From an event's append to the index reflecting it (writer only).",
            (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.searches = counter("memory_node_searches_total", "Vector searches this node answered.")
        self.search_latency = histogram(
            "memory_node_search_latency_seconds",
            "Vector searches, from request to answer (waits for consistency included).",
            (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.embeddings = counter(
            "memory_node_embeddings_total", "Texts this node embedded (writes and queries)."
        )

    def partition_lag(self, lags: dict[int, tuple[int, float]]) -> None:
        """Each partition's (messages, seconds) behind; partitions not given are dropped."""
        for gauge, i in ((self._partition_lag_messages, 0), (self._partition_lag_seconds, 1)):
            wanted = {str(p) for p in lags}
            for metric in gauge.collect():
                for sample in list(metric.samples):
                    label = sample.labels["partition"]
                    if label not in wanted:
                        gauge.remove(*self._labels.values(), label)
            for p, lag in lags.items():
                gauge.labels(**self._labels, partition=str(p)).set(lag[i])

    def request(self, kind: str, code: int) -> None:
        self._requests.labels(**self._labels, kind=kind, code=str(code)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
