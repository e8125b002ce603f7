"""Every alert of the generated PrometheusRule, evaluated by Prometheus's own
rule engine (``promtool test rules``, built from the Go module pinned in
testenv/versions.env) on synthetic series: each fires on the series that
should raise it, and stays quiet on those that should not. And every query of
the Grafana dashboards, read by Prometheus's parser (``promtool check rules``)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources.monitoring import prometheus_rule
from tests.controlplane.conftest import ROOT, _binaries

NS, NAME = "prod", "demo"
POD = "demo-shard-0-0"


def cluster() -> AgentMemoryCluster:
    return AgentMemoryCluster.from_api(
        {
            "apiVersion": f"{naming.GROUP}/v1alpha1",
            "kind": naming.KIND,
            "metadata": {"name": NAME, "namespace": NS, "uid": "u"},
            "spec": {
                "eventLog": {
                    "kafka": {"bootstrapServers": "kafka:9092", "topicManagement": "external"}
                }
            },
        }
    )


def series(metric: str, values: str, **labels: str) -> dict[str, str]:
    labels = {"namespace": NS, naming.LABEL_CLUSTER_METRIC: NAME, **labels}
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def latency(fast_per_minute: int, slow_per_minute: int) -> list[dict[str, str]]:
    """Read latency buckets of shard 0: ``fast`` reads under 50 ms, ``slow`` 100-250 ms."""
    m = f"{naming.METRIC_READ_LATENCY}_bucket"
    total = fast_per_minute + slow_per_minute
    return [
        series(m, f"0+{fast_per_minute}x40", shard="0", le="0.05"),
        series(m, f"0+{fast_per_minute}x40", shard="0", le="0.1"),
        series(m, f"0+{total}x40", shard="0", le="0.25"),
        series(m, f"0+{total}x40", shard="0", le="+Inf"),
        series(f"{naming.METRIC_READ_LATENCY}_count", f"0+{total}x40", shard="0"),
    ]


#: alert -> (series that raise it, series that do not, when to look, its labels)
CASES: dict[str, tuple[list[dict[str, str]], list[dict[str, str]], str, dict[str, str]]] = {
    "AgentMemReadLatencyHigh": (latency(0, 100), latency(100, 0), "20m", {"shard": "0"}),
    "AgentMemReadsMissingState": (
        [*latency(100, 0), series(naming.METRIC_READS_REFUSED, "0+10x40", shard="0")],
        [*latency(100, 0), series(naming.METRIC_READS_REFUSED, "0+1x40", shard="0")],
        "25m",
        {},
    ),
    "AgentMemEventLagHigh": (
        [series(naming.METRIC_EVENT_LAG_SECONDS, "1x40", pod=POD)],
        [series(naming.METRIC_EVENT_LAG_SECONDS, "0.01x40", pod=POD)],
        "20m",
        {"pod": POD},
    ),
    "AgentMemStoreLagHigh": (
        [series(naming.METRIC_STORE_LAG_SECONDS, "120x40", pod=POD)],
        [series(naming.METRIC_STORE_LAG_SECONDS, "5x40", pod=POD)],
        "25m",
        {"pod": POD},
    ),
    "AgentMemIndexLagHigh": (
        [series(naming.METRIC_INDEX_LAG_SECONDS, "60x40", pod=POD)],
        [series(naming.METRIC_INDEX_LAG_SECONDS, "1x40", pod=POD)],
        "25m",
        {"pod": POD},
    ),
    "AgentMemRedisMemoryHigh": (
        [series(naming.METRIC_REDIS_USED, "90x40", pod=POD),
         series(naming.METRIC_REDIS_MAX, "100x40", pod=POD)],
        [series(naming.METRIC_REDIS_USED, "50x40", pod=POD),
         series(naming.METRIC_REDIS_MAX, "100x40", pod=POD)],
        "20m",
        {"pod": POD},
    ),
}  # fmt: skip


def promtool() -> str:
    found = _binaries().get("AGENTMEM_PROMTOOL")
    if not found or not Path(found).exists():
        pytest.fail("promtool is not built: run `make testenv` (testenv/build.sh)")
    return found


def expand(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus renders it ({{ $labels.x }} only)."""
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)


def test_every_alert_fires_on_its_series_and_not_otherwise(tmp_path: Path) -> None:
    rule = prometheus_rule(cluster())
    rules = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(rules) == set(CASES), "every rule has a case here, and every case a rule"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    tests: list[dict[str, Any]] = []
    for alert, (firing, quiet, at, labels) in CASES.items():
        annotations = {k: expand(v, labels) for k, v in rules[alert]["annotations"].items()}
        expected = [{"exp_labels": {**rules[alert]["labels"], **labels},
                     "exp_annotations": annotations}]  # fmt: skip
        for input_series, alerts in ((firing, expected), (quiet, [])):
            tests.append(
                {
                    "name": f"{alert} {'fires' if alerts else 'stays quiet'}",
                    "interval": "1m",
                    "input_series": input_series,
                    "alert_rule_test": [
                        {"eval_time": at, "alertname": alert, "exp_alerts": alerts},
                        # not before its "for" has passed
                        {"eval_time": "1m", "alertname": alert, "exp_alerts": []},
                    ],
                }
            )
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    result = subprocess.run(
        [promtool(), "test", "rules", "tests.yaml"], cwd=tmp_path, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") >= 1, result.stdout


def test_prometheus_parses_every_dashboard_query(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    import dashboards

    rules = []
    for name, text in dashboards.dashboards().items():
        for i, expr in enumerate(dashboards.queries(text)):
            concrete = expr.replace("$namespace", NS).replace("$cluster", NAME)
            rules.append({"record": f"dashboard:{name.split('.')[0].replace('-', '_')}:{i}",
                          "expr": concrete})  # fmt: skip
    assert len(rules) >= 15
    (tmp_path / "queries.yaml").write_text(
        yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]})
    )
    result = subprocess.run(
        [promtool(), "check", "rules", "queries.yaml"], cwd=tmp_path, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
