"""Chaos under load, in bounded time: memory-node kills, Redis flushes, broker
restarts, operator kills and scale changes, while agents write and read through
the router. Nothing acknowledged may be lost and no session read may miss.

The test tier injects AGENTMEM_CHAOS_PER_TYPE faults of each type (default 4);
`make chaos` runs it with 20 of each. One JSON line reports faults, ops, acked,
lost and the longest write outage.
"""

from __future__ import annotations

import json
import os
import random
import time

from tests.controlplane.conftest import Operator
from tests.e2e.conftest import (
    Env,
    RouterAddress,
    client_token,
    cluster,
    cluster_ca,
    eventually,
    kill_container,
    wait_ready,
)
from tests.e2e.load import Workload
from tests.e2e.test_rebalance import REBALANCE, _settled

TYPES = ("node_kill", "redis_flush", "broker_restart", "operator_kill", "scale")


def test_chaos_under_load_loses_nothing(
    e2e: Env, e2e_namespace: str, e2e_operator: Operator
) -> None:
    per_type = int(os.environ.get("AGENTMEM_CHAOS_PER_TYPE", "4"))
    interval = float(os.environ.get("AGENTMEM_CHAOS_INTERVAL", "3"))
    kubectl, ns = e2e.plane.kubectl, e2e_namespace
    kubectl.apply(cluster(e2e, ns, rebalance=REBALANCE), ns)
    wait_ready(e2e, ns)
    rng = random.Random(7)
    plan = [t for t in TYPES for _ in range(per_type)]
    rng.shuffle(plan)
    done = dict.fromkeys(TYPES, 0)
    shards = 2
    started = time.monotonic()
    load = Workload(
        RouterAddress(e2e, ns),
        writers=4,
        token=client_token(e2e, ns),
        ssl_context=cluster_ca(e2e, ns),
    ).start()
    try:
        time.sleep(interval)
        for fault in plan:
            nodes = [
                p["metadata"]["name"]
                for p in kubectl.items("pods", ns, "app.kubernetes.io/component=memory-node")
            ]
            if fault == "node_kill":
                for _ in range(20):  # a node restarting has nothing to kill: take another
                    if kill_container(e2e, ns, rng.choice(nodes), "memory-node"):
                        done[fault] += 1
                        break
                    time.sleep(1)
            elif fault == "redis_flush":
                result = kubectl.run(
                    "exec", "-n", ns, rng.choice(nodes), "-c", "redis", "--",
                    "redis-cli", "-p", "6379", "flushall", check=False,
                )  # fmt: skip
                done[fault] += result.returncode == 0
            elif fault == "broker_restart":
                e2e.kafka.stop()
                e2e.kafka.start()
                done[fault] += 1
            elif fault == "operator_kill":
                e2e_operator.kill()
                e2e_operator.start()
                done[fault] += 1
            else:
                shards = 3 if shards == 2 else 2
                kubectl.run("scale", "amc/demo", f"--replicas={shards}", "-n", ns)
                done[fault] += 1
            time.sleep(interval)
        eventually(f"{shards} shards, settled", lambda: _settled(e2e, ns, shards), timeout=600)
    finally:
        load.stop()
    load.verify()
    summary = load.summary()
    report = {
        "faults": sum(done.values()),
        "faults_by_type": done,
        "ops": summary["ops"],
        "acked": summary["acked"],
        "failed": summary["failed"],
        "lost": summary["lost"],
        "missed_reads": summary["missed_reads"],
        "max_write_outage_s": summary["max_write_outage_s"],
        "write_p99_ms": summary["write_p99_ms"],
        "seconds": round(time.monotonic() - started),
        "errors": summary["errors"],
    }
    print(json.dumps(report))
    assert all(n == per_type for n in done.values()), done
    assert report["lost"] == 0 and report["missed_reads"] == 0, load.first_misses
    assert report["failed"] == 0, report
