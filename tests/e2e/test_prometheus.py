"""A real Prometheus scrapes real memory nodes, the router and the operator, and
evaluates the cluster's alert rules: a node whose applier is stalled raises
``AgentMemEventLagHigh`` for its pod, and only for it, and the cluster's status
(``kubectl get amc``'s Lag column) says the nodes are behind; both clear once the
node catches up.

The scrape job is what the Prometheus Operator makes of the ServiceMonitor the
operator builds (see tests/prometheus.py), with the token and CA of the Secrets
it names. The rules are the operator's PrometheusRule unchanged except for their
``for`` durations (minutes in production, seconds here)."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from agentmem.model import AgentMemoryCluster, naming
from agentmem.resources.monitoring import prometheus_rule, service_monitor
from tests.controlplane.conftest import Operator, _binaries
from tests.e2e.conftest import (
    Env,
    client_token,
    cluster,
    cluster_ca,
    eventually,
    http,
    pods,
    router_url,
    wait_ready,
)
from tests.prometheus import PrometheusServer, scrape_config

ALERT = "AgentMemEventLagHigh"
#: How long a rule's condition must hold here before it fires.
FOR = "3s"


def _secret_files(e2e: Env, ns: str, monitor: dict[str, Any], into: Path) -> dict[Any, Path]:
    """The values of the Secrets the ServiceMonitor names, in files Prometheus reads."""
    endpoint = monitor["spec"]["endpoints"][0]
    refs = [endpoint["authorization"]["credentials"], endpoint["tlsConfig"]["ca"]["secret"]]
    files = {}
    for ref in refs:
        secret = e2e.plane.kubectl.get("secret", ref["name"], ns)
        assert secret is not None, f"the ServiceMonitor names Secret {ref['name']}, absent"
        path = into / f"{ref['name']}.{ref['key']}"
        path.write_bytes(base64.b64decode(secret["data"][ref["key"]]))
        files[ref["name"], ref["key"]] = path
    return files


def _firing(prom: PrometheusServer, ns: str) -> dict[str, set[str]]:
    """Firing alerts of the namespace: alert name -> the pods (or "") they name."""
    found: dict[str, set[str]] = {}
    for alert in prom.alerts():
        if alert["labels"].get("namespace", ns) == ns:
            found.setdefault(alert["labels"]["alertname"], set()).add(
                alert["labels"].get("pod", "")
            )
    return found


def _event_lag(e2e: Env, ns: str) -> str:
    obj = e2e.plane.kubectl.get("amc", "demo", ns) or {}
    return str((obj.get("status") or {}).get("eventLag", ""))


def _redis(e2e: Env, ns: str, pod: str, *command: str) -> None:
    e2e.plane.kubectl.run("exec", "-n", ns, pod, "-c", "redis", "--", "redis-cli", *command)


def test_prometheus_scrapes_the_cluster_and_a_stalled_applier_raises_the_lag_alert(
    e2e: Env, e2e_namespace: str, e2e_operator: Operator, tmp_path: Path
) -> None:
    kubectl, ns = e2e.plane.kubectl, e2e_namespace
    kubectl.apply(cluster(e2e, ns, monitoring={"serviceMonitor": {"interval": "1s"}}), ns)
    model = AgentMemoryCluster.from_api(wait_ready(e2e, ns))
    monitor = service_monitor(model)
    rules = prometheus_rule(model)["spec"]["groups"]
    for group in rules:
        for rule in group["rules"]:
            rule["for"] = FOR
    assert ALERT in {r["alert"] for g in rules for r in g["rules"]}
    operator_job = {
        "job_name": "agentmem-operator",
        "static_configs": [{"targets": [f"127.0.0.1:{e2e_operator.metrics_port}"]}],
    }
    secrets = _secret_files(e2e, ns, monitor, tmp_path)
    scrape = [scrape_config(monitor, e2e.plane.kubeconfig, secrets), operator_job]
    prom = PrometheusServer(_binaries()["AGENTMEM_PROMETHEUS"], scrape, rules).start()
    try:
        _scrape_and_alert(e2e, ns, prom)
    except BaseException:
        print(f"--- prometheus log ---\n{prom.tail()}")
        raise
    finally:
        prom.stop()


def _scrape_and_alert(e2e: Env, ns: str, prom: PrometheusServer) -> None:
    nodes = sorted(p["metadata"]["name"] for p in pods(e2e, ns, "memory-node"))
    routers = [p["metadata"]["name"] for p in pods(e2e, ns, "router")]
    assert len(nodes) == 2 and routers

    # Every node and router is a target (found through the Services' EndpointSlices,
    # scraped over HTTPS with the metrics token), and so is the operator.
    def all_up() -> dict[str, str] | None:
        health = {t["labels"].get("pod", t["labels"]["job"]): t["health"] for t in prom.targets()}
        expected = {*nodes, *routers, "agentmem-operator"}
        return health if set(health) == expected and set(health.values()) == {"up"} else None

    eventually("every node, router and the operator scraped", all_up, timeout=60)
    sel = f'namespace="{ns}",{naming.LABEL_CLUSTER_METRIC}="demo"'
    lag = prom.query(f"{naming.METRIC_EVENT_LAG_SECONDS}{{{sel}}}")
    assert sorted(s["metric"]["pod"] for s in lag) == nodes
    assert prom.query("agentmem_operator_reconciles_total > 0"), "no reconcile counted"

    # Agents write; the nodes keep up: every rule evaluates on the real series without
    # error, and none fires.
    base, token, tls = router_url(e2e, ns), client_token(e2e, ns), cluster_ca(e2e, ns)

    def write(i: int, timeout: float = 10) -> int:
        """The write's status; 0 when it timed out (the client gave up waiting)."""
        url = f"{base}/v1/tenants/acme/agents/a{i}/keys/k"
        try:
            return http("PUT", url, {"i": i}, token=token, context=tls, timeout=timeout)[0]
        except OSError:  # a timeout, while connecting or reading
            return 0

    assert [write(i) for i in range(20)] == [200] * 20

    def evaluated() -> list[dict[str, Any]] | None:
        found = prom.rules()  # "0001-01-01T00:00:00Z": not evaluated yet
        return found if all(r["lastEvaluation"][:4] != "0001" for r in found) else None

    for rule in eventually("every rule evaluated", evaluated, timeout=30):
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["state"] == "inactive", (rule["name"], rule["alerts"])
    time.sleep(4)  # longer than FOR: a pending alert would be firing now
    assert _firing(prom, ns) == {}
    # The operator asks the nodes too (every second here): `kubectl get amc` says so.
    eventually("status.eventLag <1s", lambda: _event_lag(e2e, ns) == "<1s", timeout=30)
    table = e2e.plane.kubectl.run("get", "amc", "demo", "-n", ns).stdout.split("\n")
    assert dict(zip(table[0].split(), table[1].split(), strict=True))["LAG"] == "<1s", table

    # Redis of one node pauses writes (CLIENT PAUSE WRITE: reads and PING still
    # answer, so the kubelet's probes keep it; /metrics still serves). Writes reach
    # the log but its applier cannot apply them: the lag alert fires for that pod.
    stalled = nodes[0]
    _redis(e2e, ns, stalled, "client", "pause", "120000", "write")
    try:
        with ThreadPoolExecutor(16) as pool:  # half of them wait on the stalled shard
            list(pool.map(lambda i: write(i, timeout=5), range(100, 132)))
        firing = eventually(
            f"{ALERT} firing for {stalled}",
            lambda: (f := _firing(prom, ns)).get(ALERT) and f,
            timeout=90,
        )
        assert firing[ALERT] == {stalled}, firing
        behind = (">1s", ">10s", ">1m")
        eventually("status.eventLag behind", lambda: _event_lag(e2e, ns) in behind, timeout=30)
        behind_events = prom.query(
            f'{naming.METRIC_EVENT_LAG_MESSAGES}{{{sel},pod="{stalled}"}} > 0'
        )
        assert behind_events, "the stalled pod reports no events behind"
    finally:
        _redis(e2e, ns, stalled, "client", "unpause")

    # The node applies what waited: the alert clears, nothing acknowledged is lost.
    eventually(f"{ALERT} resolved", lambda: ALERT not in _firing(prom, ns), timeout=120)
    eventually("status.eventLag <1s again", lambda: _event_lag(e2e, ns) == "<1s", timeout=30)
    for i in range(20):
        url = f"{base}/v1/tenants/acme/agents/a{i}/keys/k?consistency=strong"
        status, body = http("GET", url, token=token, context=tls)
        assert (status, body.get("value")) == (200, {"i": i}), body
