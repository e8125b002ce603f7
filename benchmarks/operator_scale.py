"""One operator, many clusters: N AgentMemoryClusters created at once, then all scaled.

Runs a real control plane (etcd, kube-apiserver, controller manager, scheduler)
with kwok nodes, and the operator as its own process against it. kwok pods run
nothing, so nothing answers at the pods' addresses: in the operator's process
the warm-up handshake's HTTP probe is replaced by a stub that reports every
node caught up at every epoch. This measures the operator (its reconciles,
its API requests, its memory), not the memory nodes.

Every request the operator's Kubernetes client sends is counted in its process
(by HTTP method; watch streams apart), whatever the operator's version, so
``--tree`` measures another checkout (e.g. the commit before a change) the same
way. kopf's own requests (its watch streams; before the work queue, also its
annotation patches) are not in the count.

    python benchmarks/operator_scale.py [--clusters 500] [--tree PATH]

Phases: create N clusters of 3 shards in one request stream, wait until every
one is Ready (``pods_ready_s``: when all their pods were Ready, the control
plane's share of the time; the rest is how long status followed); stay idle
(``--idle-seconds``) and count requests; scale every cluster to 4 shards, wait
until every rebalance finished and all are Ready again. Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NAMESPACE = "scale"


def cluster_doc(name: str, shards: int) -> dict[str, Any]:
    """A small cluster: one replica per shard, one router, small requests (kwok pods
    still take scheduler and kubelet-side room)."""
    small = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}}
    return {
        "apiVersion": "agentmem.io/v1alpha1",
        "kind": "AgentMemoryCluster",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "shards": shards,
            "replicasPerShard": 1,
            "partitions": 16,
            "eventLog": {
                "kafka": {
                    "bootstrapServers": "kafka.kafka.svc:9092",
                    "topicManagement": "strimzi",
                    "strimzi": {"clusterName": "kafka", "apiVersion": "v1beta2"},
                    "replicas": 1,
                    "minInSyncReplicas": 1,
                }
            },
            "resources": small,
            "cache": {"memoryLimit": "64Mi", "cpuRequest": "10m"},
            "router": {"replicas": 1, "resources": small},
            "rebalance": {"autoApprove": True, "stepIntervalSeconds": 0, "maxConcurrentMoves": 16},
        },
    }


# The operator's process --------------------------------------------------------------


def run_operator(metrics_port: int) -> None:
    """`agentmem operator` with a request counter and the stub probe (see the docstring)."""
    from kubernetes.client import rest
    from prometheus_client import Counter

    requests = Counter("bench_api_requests_total", "Requests to the API server.", ["verb"])
    original = rest.RESTClientObject.request

    def counted(self: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        verb = "WATCH" if "watch=true" in url or "watch=1" in url else method
        requests.labels(verb).inc()
        return original(self, method, url, *args, **kwargs)

    rest.RESTClientObject.request = counted  # type: ignore[method-assign]

    from agentmem.controller import nodes

    class Serving(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            return {"phase": "serving", "high": 1, "applied": 0}

    def caught_up(self: Any, address: str, path: str, credentials: Any = None) -> dict[str, Any]:
        return {
            "epoch": 10**9,
            "pending_epoch": 10**9,
            "partitions": Serving({"*": {}}),
        }  # non-empty: `or {}` keeps it

    nodes.HttpProbe.get = caught_up  # type: ignore[method-assign]
    from agentmem.cli import main

    raise SystemExit(main(["operator", "-n", NAMESPACE, "--metrics-port", str(metrics_port)]))


# The benchmark ---------------------------------------------------------------------------


def scrape(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, _, value = line.rpartition(" ")
        out[name] = float(value)
    return out


def total(metrics: dict[str, float], prefix: str, exclude: str = "\x00") -> float:
    return sum(v for k, v in metrics.items() if k.startswith(prefix) and exclude not in k)


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def kubectl_json(kubectl: Any, *args: str) -> Any:
    return json.loads(kubectl.run(*args, "-o", "json", timeout=300).stdout)


def count_ready(kubectl: Any, shards: int) -> int:
    ready = 0
    for obj in kubectl_json(kubectl, "get", "amc", "-n", NAMESPACE)["items"]:
        status = obj.get("status") or {}
        if status.get("rebalance") or status.get("readyShards") != shards:
            continue
        gen = obj["metadata"]["generation"]
        if any(
            c["type"] == "Ready" and c["status"] == "True" and c.get("observedGeneration") == gen
            for c in status.get("conditions", [])
        ):
            ready += 1
    return ready


def ready_pods(kubectl: Any) -> int:
    """Pods of the namespace whose Ready condition is True (what the control plane did)."""
    column = 'R:.status.conditions[?(@.type=="Ready")].status'
    out = kubectl.run(
        "get", "pods", "-n", NAMESPACE, "-o", f"custom-columns={column}", "--no-headers",
        timeout=300,
    ).stdout  # fmt: skip
    return sum(1 for line in out.splitlines() if line.strip() == "True")


def wait_all(
    what: str,
    kubectl: Any,
    n: int,
    shards: int,
    timeout: float,
    tick: Callable[[], None],
    pods: int,
) -> tuple[float, float]:
    """Seconds until every cluster is Ready, and until its ``pods`` pods were."""
    started = time.monotonic()
    last = -1
    pods_at: float | None = None
    while True:
        ready = count_ready(kubectl, shards)
        if pods_at is None and ready_pods(kubectl) >= pods:
            pods_at = time.monotonic() - started
        tick()
        elapsed = time.monotonic() - started
        if ready != last:
            print(f"  {what}: {ready}/{n} Ready after {elapsed:.0f}s", file=sys.stderr)
            last = ready
        if ready >= n:
            return elapsed, elapsed if pods_at is None else pods_at
        if elapsed > timeout:
            raise SystemExit(f"{what}: only {ready}/{n} Ready after {timeout:.0f}s")
        time.sleep(3)


def apply_all(kubectl: Any, n: int, shards: int) -> None:
    import yaml

    docs = [cluster_doc(f"c{i:04d}", shards) for i in range(n)]
    kubectl.run(
        "apply", "--server-side", "--field-manager=bench", "-f", "-",
        stdin=yaml.safe_dump_all(docs), timeout=600,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--scale-to", type=int, default=4)
    parser.add_argument("--idle-seconds", type=float, default=120)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose operator runs")
    parser.add_argument(
        "--pod-net",
        default="127.244",
        help="first two octets of the kwok pods' addresses (127.244, loopback, as in the "
        "tests; the EndpointSlice controller rejects loopback addresses and retries each "
        "Service, which costs the control plane CPU: 10.244 measures without that)",
    )
    parser.add_argument(
        "--kcm-qps",
        type=int,
        default=20,
        help="the controller manager's API requests per second (20, its default, throttles "
        "the StatefulSet, ReplicaSet and EndpointSlice controllers at this scale)",
    )
    parser.add_argument("--run-operator", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_operator is not None:
        run_operator(args.run_operator)
        return

    from tests.controlplane.conftest import control_plane
    from tests.net import free_port

    os.environ["AGENTMEM_KWOK_POD_NET"] = args.pod_net  # read by testenv/controlplane.sh
    if args.kcm_qps != 20:
        os.environ["AGENTMEM_KCM_QPS"] = str(args.kcm_qps)
    n = args.clusters
    nodes = max(6, (n * (args.scale_to + 1)) // 80 + 2)
    tree = args.tree.resolve()
    revision = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    with (
        tempfile.TemporaryDirectory(prefix="agentmem-scale-") as tmp,
        control_plane(Path(tmp) / "cp", fake_nodes=nodes) as plane,
    ):
        kubectl = plane.kubectl
        kubectl.run("create", "namespace", NAMESPACE)
        port = free_port()
        log = Path(tmp) / "operator.log"
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "PYTHONPATH": f"{tree / 'operator'}:{ROOT}",
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "--run-operator", str(port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=tree,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    scrape(port)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        tail = log.read_text()[-3000:]
                        raise SystemExit(f"the operator did not start:\n{tail}") from None
                    time.sleep(0.5)
            time.sleep(5)  # its watches are up
            peak = {"rss": 0.0}

            def tick() -> None:
                peak["rss"] = max(peak["rss"], rss_mb(proc.pid, "VmHWM"))

            before = scrape(port)
            print(f"creating {n} clusters of {args.shards} shards", file=sys.stderr)
            apply_all(kubectl, n, args.shards)
            ready_s, pods_s = wait_all(
                "create", kubectl, n, args.shards, args.timeout, tick, n * (args.shards + 1)
            )
            created = scrape(port)

            print(f"idle for {args.idle_seconds:.0f}s", file=sys.stderr)
            time.sleep(args.idle_seconds / 2)
            idle_from, cpu_from = scrape(port), cpu_seconds(proc.pid)
            time.sleep(args.idle_seconds / 2)
            idle_to, cpu_to = scrape(port), cpu_seconds(proc.pid)
            tick()

            print(f"scaling every cluster to {args.scale_to} shards", file=sys.stderr)
            apply_all(kubectl, n, args.scale_to)
            scaled_s, scaled_pods_s = wait_all(
                "scale", kubectl, n, args.scale_to, args.timeout, tick, n * (args.scale_to + 1)
            )
            scaled = scrape(port)
        except BaseException:
            print(f"the operator's log ends:\n{log.read_text()[-3000:]}", file=sys.stderr)
            first = kubectl.get("amc", "c0000", NAMESPACE) or {}
            print(f"c0000's status: {json.dumps(first.get('status'))}", file=sys.stderr)
            raise
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        hwm = peak["rss"]

    def requests(m: dict[str, float]) -> float:
        return total(m, "bench_api_requests_total", exclude="WATCH")

    def reconciles(m: dict[str, float]) -> float:
        return total(m, "agentmem_operator_reconciles_total")

    busy_requests = requests(created) - requests(before) + requests(scaled) - requests(idle_to)
    busy_reconciles = (
        reconciles(created) - reconciles(before) + reconciles(scaled) - reconciles(idle_to)
    )
    idle_minutes = (args.idle_seconds / 2) / 60
    by_verb = {
        re.sub(r'.*verb="([A-Z]+)".*', r"\1", k): int(v - before.get(k, 0))
        for k, v in scaled.items()
        if k.startswith("bench_api_requests_total{")
    }
    result = {
        "clusters": n,
        "shards": args.shards,
        "scaled_to": args.scale_to,
        "revision": revision,
        "kwok_nodes": nodes,
        "pod_net": args.pod_net,
        "kcm_qps": args.kcm_qps,
        "all_ready_s": round(ready_s, 1),
        "pods_ready_s": round(pods_s, 1),
        "all_scaled_ready_s": round(scaled_s, 1),
        "scaled_pods_ready_s": round(scaled_pods_s, 1),
        "reconciles_per_s": round(
            (reconciles(created) - reconciles(before)) / max(ready_s, 1e-9), 2
        ),
        "operator_rss_mb": round(hwm, 1),
        "api_requests_per_reconcile": round(busy_requests / max(busy_reconciles, 1), 2),
        "api_requests": by_verb,
        "idle_requests_per_cluster_min": round(
            (requests(idle_to) - requests(idle_from)) / n / idle_minutes, 3
        ),
        "idle_reconciles_per_cluster_min": round(
            (reconciles(idle_to) - reconciles(idle_from)) / n / idle_minutes, 3
        ),
        "idle_cpu_percent": round(100 * (cpu_to - cpu_from) / (args.idle_seconds / 2), 1),
        "stub_probe": True,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
