"""The operator's own Prometheus metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram


@dataclass(frozen=True)
class OperatorMetrics:
    reconciles: Counter = field(
        default_factory=lambda: Counter(
            "agentmem_operator_reconciles_total", "Reconciles by result.", ["result"]
        )
    )
    reconcile_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "agentmem_operator_reconcile_seconds", "Time one reconcile takes."
        )
    )
    api_requests: Counter = field(
        default_factory=lambda: Counter(
            "agentmem_operator_api_requests_total",
            "Requests to the Kubernetes API server by verb (get, list, watch, apply, "
            "patch, create, delete, event).",
            ["verb"],
        )
    )
    applies_skipped: Counter = field(
        default_factory=lambda: Counter(
            "agentmem_operator_applies_skipped_total",
            "Applies not sent: the manifest was the one last applied and the object "
            "had not changed since.",
        )
    )
    queue_depth: Gauge = field(
        default_factory=lambda: Gauge(
            "agentmem_operator_queue_depth",
            "Clusters waiting in the work queue for a reconcile (not counting those "
            "waiting for a retry or requeue time).",
        )
    )
    queue_wait_seconds: Histogram = field(
        default_factory=lambda: Histogram(
            "agentmem_operator_queue_wait_seconds",
            "Time a cluster waited in the work queue before its reconcile started.",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
        )
    )
    cached_objects: Gauge = field(
        default_factory=lambda: Gauge(
            "agentmem_operator_cached_objects",
            "Objects the operator's watches hold in memory.",
        )
    )
    directory_epoch: Gauge = field(
        default_factory=lambda: Gauge(
            "agentmem_operator_directory_epoch",
            "Committed directory epoch per cluster.",
            ["namespace", "cluster"],
        )
    )
    rebalance_moves_remaining: Gauge = field(
        default_factory=lambda: Gauge(
            "agentmem_operator_rebalance_moves_remaining",
            "Partition moves of the running rebalance not yet committed.",
            ["namespace", "cluster"],
        )
    )


METRICS = OperatorMetrics()
