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
