"""Prometheus Operator objects: the ServiceMonitor and the PrometheusRule."""

from __future__ import annotations

from typing import Any

from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources._meta import metadata

MONITORING_API = "monitoring.coreos.com/v1"


def service_monitor(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """Scrapes ``/metrics`` of every memory node and router: with the operator's
    ``metrics`` token (Secret ``<cluster>-metrics``) when auth is on, over HTTPS
    with the cluster's CA when TLS is on."""
    endpoint: dict[str, Any] = {
        "port": "http",
        "path": "/metrics",
        "interval": cluster.spec.monitoring.service_monitor.interval,
    }
    if cluster.spec.auth.enabled:
        endpoint["authorization"] = {
            "type": "Bearer",
            "credentials": {"name": naming.metrics_token_name(cluster.name), "key": "token"},
        }
    if cluster.spec.tls.enabled:
        endpoint["scheme"] = "https"
        endpoint["tlsConfig"] = {
            "ca": {"secret": {"name": naming.tls_name(cluster.name), "key": "ca.crt"}},
            "serverName": f"{cluster.name}.{cluster.namespace}.svc",
        }
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": metadata(
            cluster, naming.monitoring_name(cluster.name), naming.COMPONENT_MONITORING
        ),
        "spec": {
            "selector": {
                "matchLabels": {
                    naming.LABEL_INSTANCE: cluster.name,
                    naming.LABEL_NAME: naming.APP_NAME,
                    naming.SCRAPE_LABEL: "true",
                }
            },
            "namespaceSelector": {"matchNames": [cluster.namespace]},
            "endpoints": [endpoint],
        },
    }


def _alert(name: str, expr: str, duration: str, summary: str, action: str) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": duration,
        "labels": {"severity": "warning"},
        "annotations": {"summary": summary, "description": action},
    }


def prometheus_rule(cluster: AgentMemoryCluster) -> dict[str, Any]:
    """The alerts of ARCHITECTURE.md, with the thresholds from the spec."""
    t = cluster.spec.monitoring.thresholds
    sel = f'namespace="{cluster.namespace}",{naming.LABEL_CLUSTER_METRIC}="{cluster.name}"'
    n = naming
    p99 = (
        f"histogram_quantile(0.99, sum by (le, shard) "
        f"(rate({n.METRIC_READ_LATENCY}_bucket{{{sel}}}[5m])))"
    )
    refused = f"sum(rate({n.METRIC_READS_REFUSED}{{{sel}}}[5m]))"
    answered = f"sum(rate({n.METRIC_READ_LATENCY}_count{{{sel}}}[5m]))"
    rules = [
        _alert(
            "AgentMemReadLatencyHigh",
            f"{p99} > {t.read_latency_p99_ms / 1000}",
            "5m",
            f"p99 read latency of shard {{{{ $labels.shard }}}} of {cluster.name} is above "
            f"{t.read_latency_p99_ms} ms",
            "Check the shard's CPU and Redis latency, or add shards (spec.shards).",
        ),
        _alert(
            "AgentMemReadsMissingState",
            f"{refused} / clamp_min({refused} + {answered}, 1e-9) > {t.miss_ratio_percent / 100}",
            "10m",
            f"More than {t.miss_ratio_percent}% of the reads of {cluster.name} find no ready "
            "state (refused while a partition loads, rebuilds or warms up)",
            "A node keeps rebuilding or warming: check its restarts, its Redis (emptied or "
            "evicting?) and the durable store it loads from; clients retry other replicas.",
        ),
        _alert(
            "AgentMemEventLagHigh",
            f"max by (pod) ({n.METRIC_EVENT_LAG_SECONDS}{{{sel}}}) > {t.event_lag_ms / 1000}",
            "5m",
            f"Pod {{{{ $labels.pod }}}} of {cluster.name} applies events more than "
            f"{t.event_lag_ms} ms behind the log",
            "Check the node's CPU and its Redis, and the Kafka brokers' health.",
        ),
        _alert(
            "AgentMemStoreLagHigh",
            f"max by (pod) ({n.METRIC_STORE_LAG_SECONDS}{{{sel}}}) > {t.store_lag_seconds}",
            "10m",
            f"The durable store is more than {t.store_lag_seconds} s behind pod "
            f"{{{{ $labels.pod }}}} of {cluster.name}",
            "Check the store (PostgreSQL) and the node's store_error in /v1/status; the log is "
            "kept until the store catches up, so watch the topic's size.",
        ),
        _alert(
            "AgentMemIndexLagHigh",
            f"max by (pod) ({n.METRIC_INDEX_LAG_SECONDS}{{{sel}}}) > {t.index_lag_seconds}",
            "10m",
            f"The vector index is more than {t.index_lag_seconds} s behind pod "
            f"{{{{ $labels.pod }}}} of {cluster.name}",
            "Check Milvus and the node's semantic.error in /v1/status; searches that wait for "
            "versions answer 503 index_behind until it catches up.",
        ),
        _alert(
            "AgentMemRedisMemoryHigh",
            f"max by (pod) ({n.METRIC_REDIS_USED}{{{sel}}} / {n.METRIC_REDIS_MAX}{{{sel}}}) "
            f"> {t.redis_memory_percent / 100}",
            "5m",
            f"Redis of pod {{{{ $labels.pod }}}} of {cluster.name} is above "
            f"{t.redis_memory_percent}% of maxmemory",
            "Raise spec.cache.memoryLimit or add shards before writes are refused.",
        ),
    ]
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": metadata(
            cluster, naming.monitoring_name(cluster.name), naming.COMPONENT_MONITORING
        ),
        "spec": {"groups": [{"name": f"agentmem.{cluster.name}", "rules": rules}]},
    }
