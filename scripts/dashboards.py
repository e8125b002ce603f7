"""The Grafana dashboards of agentmem, built with grafanalib: one per cluster
(requests, latency, errors, lag, rebalance, memory) and one for the operator.

``make manifests`` (scripts/generate_manifests.py) writes them as JSON into
``charts/agentmem-operator/dashboards/``; the chart ships them in a ConfigMap
labelled for Grafana's dashboard sidecar, and the kustomize base carries the
same ConfigMap. tests/unit/test_dashboards.py checks that every panel's query
names metrics the code exports, and tests/controlplane/test_alert_rules.py that
Prometheus's own parser accepts every query.

Grafana itself is not needed to build or check them.
"""

from __future__ import annotations

import json
from typing import Any

import grafanalib.core as g
from grafanalib._gen import DashboardEncoder

from agentmem.model import naming

DATASOURCE = "${datasource}"
SEL = f'namespace="$namespace",{naming.LABEL_CLUSTER_METRIC}="$cluster"'
ROUTER_SEL = 'namespace="$namespace",pod=~"$cluster-router-.*"'
OPERATOR_CLUSTER_SEL = f'{naming.LABEL_CLUSTER_METRIC}="$cluster"'


def _panel(
    title: str,
    queries: list[tuple[str, str]],
    unit: str,
    x: int,
    y: int,
    description: str,
    w: int = 12,
) -> g.TimeSeries:
    return g.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=[
            g.Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i))
            for i, (expr, legend) in enumerate(queries)
        ],
        unit=unit,
        gridPos=g.GridPos(h=8, w=w, x=x, y=y),
    )


def _row(title: str, y: int) -> g.RowPanel:
    return g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=y))


def _quantile(q: float, metric: str, selector: str, by: str = "") -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{{{selector}}}[5m])))"


def _variable(name: str, query: str) -> g.Template:
    return g.Template(
        name=name,
        label=name,
        query=query,
        dataSource=DATASOURCE,
        refresh=2,  # on time range change
        sort=1,
    )


def _datasource() -> g.Template:
    return g.Template(name="datasource", label="Prometheus", query="prometheus", type="datasource")


def cluster_dashboard() -> g.Dashboard:
    n = naming
    rows: list[Any] = [_row("Requests", 0)]
    rows += [
        _panel(
            "Requests by kind",
            [(f"sum by (kind) (rate({n.METRIC_REQUESTS}{{{SEL}}}[5m]))", "{{kind}}")],
            "reqps", 0, 1, "Answers of the memory nodes per second, by kind of request.",
        ),
        _panel(
            "Errors by status",
            [(f'sum by (code) (rate({n.METRIC_REQUESTS}{{{SEL},code=~"[45].."}}[5m]))',
              "{{code}}"),
             (f'sum by (outcome) (rate(agentmem_router_requests_total{{{ROUTER_SEL},'
              f'outcome!="forwarded"}}[5m]))', "router {{outcome}}")],
            "reqps", 12, 1,
            "4xx and 5xx answers of the nodes, and what the routers could not forward.",
        ),
        _panel(
            "Read latency",
            [(_quantile(0.5, n.METRIC_READ_LATENCY, SEL), "p50"),
             (_quantile(0.99, n.METRIC_READ_LATENCY, SEL), "p99"),
             (_quantile(0.99, n.METRIC_READ_LATENCY, SEL, "shard"), "p99 shard {{shard}}")],
            "s", 0, 9, "Time to serve a read, waits for versions included (alert: p99 > 120 ms).",
        ),
        _panel(
            "Write and search latency",
            [(_quantile(0.5, n.METRIC_WRITE_LATENCY, SEL), "write p50"),
             (_quantile(0.99, n.METRIC_WRITE_LATENCY, SEL), "write p99"),
             (_quantile(0.99, "memory_node_search_latency_seconds", SEL), "search p99")],
            "s", 12, 9, "From request to acknowledged write; vector searches.",
        ),
        _row("Lag", 17),
        _panel(
            "Event lag (seconds)",
            [(f"max by (pod) ({n.METRIC_EVENT_LAG_SECONDS}{{{SEL}}})", "{{pod}}")],
            "s", 0, 18,
            "Age of the oldest event in the log not yet applied, per pod: 0 when caught up.",
        ),
        _panel(
            "Event lag (events)",
            [(f"sum by (pod) ({n.METRIC_EVENT_LAG_MESSAGES}{{{SEL}}})", "{{pod}}"),
             (f"topk(5, max by (partition) ({n.METRIC_PARTITION_LAG_MESSAGES}{{{SEL}}}))",
              "partition {{partition}}")],
            "short", 12, 18, "Events not yet applied, per pod and for the five worst partitions.",
        ),
        _panel(
            "Durable store and index lag",
            [(f"max by (pod) ({n.METRIC_STORE_LAG_SECONDS}{{{SEL}}})", "store {{pod}}"),
             (f"max by (pod) ({n.METRIC_INDEX_LAG_SECONDS}{{{SEL}}})", "index {{pod}}")],
            "s", 0, 26, "Applied here, not yet written behind to the store or the vector index.",
        ),
        _panel(
            "Reads refused while loading",
            [(f"sum by (pod) (rate({n.METRIC_READS_REFUSED}{{{SEL}}}[5m]))", "{{pod}}")],
            "reqps", 12, 26,
            "Reads a node could not answer exactly (partition loading, rebuilding, warming).",
        ),
        _row("Rebalance and memory", 34),
        _panel(
            "Rebalance",
            [(f"max(agentmem_operator_directory_epoch{{{OPERATOR_CLUSTER_SEL}}})", "epoch"),
             (f"max(agentmem_operator_rebalance_moves_remaining{{{OPERATOR_CLUSTER_SEL}}})",
              "moves remaining")],
            "short", 0, 35, "The committed directory epoch, and the moves a rebalance has left.",
        ),
        _panel(
            "Redis memory",
            [(f"max by (pod) ({n.METRIC_REDIS_USED}{{{SEL}}} / {n.METRIC_REDIS_MAX}{{{SEL}}})",
              "{{pod}}")],
            "percentunit", 12, 35,
            "Share of maxmemory the state uses (alert above 85 %; writes refused when full).",
        ),
        _panel(
            "Events applied",
            [(f"sum by (pod) (rate(memory_node_events_applied_total{{{SEL}}}[5m]))", "{{pod}}")],
            "ops", 0, 43, "Events each pod applies to its state per second.",
        ),
        _panel(
            "Waiting requests",
            [(f"sum by (pod) (memory_node_waiting_requests{{{SEL}}})", "{{pod}}")],
            "short", 12, 43, "Requests waiting for a version or an outcome (must not grow).",
        ),
    ]  # fmt: skip
    return g.Dashboard(
        title="agentmem cluster",
        uid="agentmem-cluster",
        description="One agentmem cluster: requests, latency, errors, lag, rebalance, memory.",
        tags=["agentmem"],
        timezone="browser",
        refresh="30s",
        templating=g.Templating(
            list=[
                _datasource(),
                _variable("namespace", f"label_values({n.METRIC_READ_LATENCY}_count, namespace)"),
                _variable(
                    "cluster",
                    f'label_values({n.METRIC_READ_LATENCY}_count{{namespace="$namespace"}}, '
                    f"{n.LABEL_CLUSTER_METRIC})",
                ),
            ]
        ),
        panels=rows,
    ).auto_panel_ids()


def operator_dashboard() -> g.Dashboard:
    panels: list[Any] = [
        _panel(
            "Reconciles by result",
            [("sum by (result) (rate(agentmem_operator_reconciles_total[5m]))", "{{result}}")],
            "ops", 0, 0, "Reconciles per second, by result (errors are retried).",
        ),
        _panel(
            "Reconcile duration",
            [(_quantile(0.5, "agentmem_operator_reconcile_seconds", ""), "p50"),
             (_quantile(0.99, "agentmem_operator_reconcile_seconds", ""), "p99")],
            "s", 12, 0, "Time one reconcile takes.",
        ),
        _panel(
            "Directory epoch per cluster",
            [("max by (exported_namespace, cluster) (agentmem_operator_directory_epoch)",
              "{{exported_namespace}}/{{cluster}}")],
            "short", 0, 8, "The committed epoch of every cluster's directory.",
        ),
        _panel(
            "Rebalance moves remaining",
            [("max by (exported_namespace, cluster) "
              "(agentmem_operator_rebalance_moves_remaining)",
              "{{exported_namespace}}/{{cluster}}")],
            "short", 12, 8, "Moves of running rebalances not yet committed.",
        ),
        _panel(
            "Work queue",
            [("max(agentmem_operator_queue_depth)", "clusters queued"),
             (_quantile(0.99, "agentmem_operator_queue_wait_seconds", ""), "wait p99 (s)")],
            "short", 0, 16, "Clusters waiting for a worker, and how long they waited.",
        ),
        _panel(
            "API requests by verb",
            [("sum by (verb) (rate(agentmem_operator_api_requests_total[5m]))", "{{verb}}"),
             ("sum(rate(agentmem_operator_applies_skipped_total[5m]))", "applies skipped")],
            "reqps", 12, 16,
            "Requests to the Kubernetes API server; applies not sent because nothing changed.",
        ),
        _panel(
            "Operator memory and CPU",
            [('process_resident_memory_bytes{job=~".*agentmem-operator.*"}', "resident memory"),
             ('rate(process_cpu_seconds_total{job=~".*agentmem-operator.*"}[5m])', "CPU (cores)"),
             ("max(agentmem_operator_cached_objects)", "cached objects")],
            "bytes", 0, 24, "The operator process, and the objects its watches hold.", w=24,
        ),
    ]  # fmt: skip
    return g.Dashboard(
        title="agentmem operator",
        uid="agentmem-operator",
        description="The agentmem operator: reconciles, its work queue, API requests, epochs.",
        tags=["agentmem"],
        timezone="browser",
        refresh="30s",
        templating=g.Templating(list=[_datasource()]),
        panels=panels,
    ).auto_panel_ids()


def dashboards() -> dict[str, str]:
    """File name -> the dashboard's JSON text."""
    out = {}
    for name, board in (
        ("agentmem-cluster.json", cluster_dashboard()),
        ("agentmem-operator.json", operator_dashboard()),
    ):
        out[name] = (
            json.dumps(board.to_json_data(), cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"
        )
    return out


def queries(text: str) -> list[str]:
    """Every query (panel targets and template variables) of a dashboard's JSON."""
    board = json.loads(text)
    found = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if t.get("expr")]
    return found
