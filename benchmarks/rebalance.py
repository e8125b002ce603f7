"""Writes through a 3 -> 4 shard rebalance with 100,000 keys, on real pods (the e2e
environment: a kubelet running the project's image, the broker and PostgreSQL on
the bridge, the operator as a process), against the same load before and after.

1. 100,000 keys (1,000 agents x 100 keys) go into the event topic; a 3-shard
   cluster takes them (its nodes replay them and write them behind into the store).
2. Agents write through the router (each write with a request id, retried on a
   retryable answer, read back at its version): ``--steady`` seconds, then the
   scale to 4 shards while they go on, then ``--after`` seconds.
3. Per phase: writes per second and p99 latency (a retried write counts once,
   with its whole time); the rebalance's duration; the longest stall (no write
   acknowledged); failed writes, lost writes (a strong read of every key written)
   and session reads that missed.

    python benchmarks/rebalance.py [--keys 100000] [--steady 20] [--after 20]

Needs root and `make testenv` (like the e2e tier). Prints progress, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from confluent_kafka import Producer
from tests.controlplane.conftest import Operator
from tests.e2e.conftest import Env, RouterAddress, cluster, environment, wait_ready
from tests.e2e.load import Workload
from tests.e2e.test_rebalance import REBALANCE, _settled, directory

from agentmem.directory import partition_for
from agentmem.eventlog.events import Event
from agentmem.eventlog.kafka import TopicSpec, ensure_topic

PARTITIONS = 32
NAMESPACE = "bench"


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def preload(env: Env, topic: str, keys: int) -> None:
    """``keys`` puts over 1,000 agents, straight into the topic (the cluster replays them)."""
    ensure_topic(env.kafka.settings(), TopicSpec(topic, PARTITIONS, 1, {}))
    producer = Producer({"bootstrap.servers": env.kafka.bootstrap, "linger.ms": 20})
    agents = 1000
    for i in range(keys):
        agent = f"pre-{i % agents}"
        event = Event(
            "put", "load", agent, f"k{i // agents}", f'{{"n":{i}}}', None, None, "", "bench", 0
        )
        p = partition_for("load", agent, PARTITIONS)
        while True:
            try:
                producer.produce(topic, event.encode(), event.path.encode(), partition=p)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(60)


def window(timeline: list[tuple[float, float]], start: float, end: float) -> dict[str, float]:
    ms = sorted(latency for at, latency in timeline if start <= at < end)
    times = sorted(at for at, _ in timeline if start <= at < end)
    stall = max((b - a for a, b in zip([start, *times], [*times, end], strict=True)), default=0.0)
    return {
        "writes_per_s": round(len(ms) / max(end - start, 1e-9), 1),
        "p50_ms": round(ms[len(ms) // 2], 1) if ms else 0.0,
        "p99_ms": round(ms[int(len(ms) * 0.99)], 1) if ms else 0.0,
        "stall_s": round(stall, 2),
        "writes": len(ms),
    }


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _exit)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--steady", type=float, default=20)
    parser.add_argument("--after", type=float, default=20)
    parser.add_argument("--writers", type=int, default=6)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="agentmem-bench-"))
    operator: Operator | None = None
    try:
        say("starting the control plane, a real node, Kafka and PostgreSQL ...")
        with environment(workdir) as env:
            kubectl = env.plane.kubectl
            kubectl.run("create", "namespace", NAMESPACE)
            kubectl.run(
                "label", "namespace", NAMESPACE, "pod-security.kubernetes.io/enforce=restricted"
            )
            topic = f"agentmem.{NAMESPACE}.demo.events"
            say(f"writing {args.keys} keys into {topic} ...")
            preload(env, topic, args.keys)
            docs = cluster(
                env, NAMESPACE, shards=3, partitions=PARTITIONS, rebalance=REBALANCE,
            )  # fmt: skip
            docs[1]["spec"]["eventLog"]["kafka"]["topicManagement"] = "external"
            operator = Operator(env.plane, NAMESPACE, workdir / "operator.log").start()
            kubectl.apply(docs, NAMESPACE)
            wait_ready(env, NAMESPACE, timeout=600)
            say("3 shards ready; load starts")
            load = Workload(RouterAddress(env, NAMESPACE), writers=args.writers).start()
            time.sleep(args.steady)
            before = directory(env, NAMESPACE)
            scaled = time.monotonic()
            kubectl.run("scale", "amc/demo", "--replicas=4", "-n", NAMESPACE)
            while not _settled(env, NAMESPACE, 4):
                time.sleep(0.5)
            settled = time.monotonic()
            say(f"rebalanced to 4 shards in {settled - scaled:.1f}s")
            time.sleep(args.after)
            end = time.monotonic()
            load.stop()
            load.verify()
            after = directory(env, NAMESPACE)
            timeline = load.counts.timeline
            steady = window(timeline, scaled - args.steady, scaled)
            during = window(timeline, scaled, settled)
            post = window(timeline, settled, end)
            moved = (
                sum(1 for a, b in zip(before.table, after.table, strict=True) if a != b)
                if before and after else None
            )  # fmt: skip
            summary: dict[str, Any] = {
                "keys": args.keys,
                "partitions": PARTITIONS,
                "partitions_moved": moved,
                "rebalance_s": round(settled - scaled, 1),
                "steady_writes_per_s": steady["writes_per_s"],
                "steady_write_p99_ms": steady["p99_ms"],
                "during_writes_per_s": during["writes_per_s"],
                "during_write_p99_ms": during["p99_ms"],
                "after_writes_per_s": post["writes_per_s"],
                "after_write_p99_ms": post["p99_ms"],
                "during_over_steady_p99": round(during["p99_ms"] / max(steady["p99_ms"], 1e-9), 2),
                "longest_write_stall_s": max(steady["stall_s"], during["stall_s"], post["stall_s"]),
                "during_write_stall_s": during["stall_s"],
                "errors": load.counts.failed,
                "retried_answers": load.counts.retries,
                "lost": load.counts.lost,
                "missed_reads": load.counts.missed_reads,
            }
            operator.stop()
            operator = None
            print(json.dumps(summary))
            return 0
    finally:
        if operator is not None:
            operator.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
