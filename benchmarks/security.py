"""What authentication and TLS cost: reads and writes per second through the
router, plain and secured, side by side in one run.

    python benchmarks/security.py [--seconds 8]

Two local clusters (``agentmem up``'s processes: 3 shards and a router, the
embedded log): one plain (no tokens, HTTP), one secured (every request carries
a JWT that the router and then the node verify; HTTPS from the client to the
router, mutual TLS from the router to the nodes). wrk sends the requests
through each router with 64 kept-alive connections: eventual reads of 64
agents, and puts. The clusters take turns, twice each, so drift on the machine
falls on both. Prints a line per measurement, then one JSON line. Goal: auth
and TLS together cost under 25 % of read throughput.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.node import WRK_READ, WRK_WRITE, wrk
from tests.net import free_port_run

from agentmem.local import LocalCluster

CONNECTIONS = 64
AGENTS = 64


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def with_token(script: str, token: str | None) -> str:
    """A wrk script whose every request carries the token."""
    if token is None:
        return script
    return f'wrk.headers["Authorization"] = "Bearer {token}"\n' + script.replace(
        '{["Content-Type"] = "application/json"}',
        f'{{["Content-Type"] = "application/json", ["Authorization"] = "Bearer {token}"}}',
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does)")
    read = WRK_READ.format(agents=AGENTS, delay="")
    write = WRK_WRITE.format(agents=AGENTS, delay="")
    with tempfile.TemporaryDirectory(prefix="agentmem-bench-") as data:
        clusters = {
            "plain": LocalCluster(data=Path(data) / "plain", port=free_port_run(4), auth=False),
            "auth_tls": LocalCluster(data=Path(data) / "auth", port=free_port_run(4), tls=True),
        }
        tokens: dict[str, str | None] = {}
        try:
            for name, cluster in clusters.items():
                cluster.topic = f"agentmem.bench.{uuid.uuid4().hex[:8]}.events"
                cluster.prepare()
                cluster.start(io.StringIO())
                token = cluster.token_file.read_text().strip() if cluster.auth else None
                tokens[name] = token
                wrk(cluster.router_url, with_token(write, token), 3, CONNECTIONS)  # preload
            results: dict[str, list[float]] = {}
            for _ in range(2):
                for kind, script in (("read", read), ("write", write)):
                    for name, cluster in clusters.items():
                        got = wrk(cluster.router_url, with_token(script, tokens[name]),
                                  args.seconds, CONNECTIONS)  # fmt: skip
                        if got["errors"]:
                            raise SystemExit(f"{name} {kind}: {got['errors']:.0f} errors")
                        say(f"{kind:<5} {name:<8} {got['rps']:8.0f} req/s  "
                            f"p99 {got.get('p99_ms', 0):6.2f} ms")  # fmt: skip
                        results.setdefault(f"{kind}_rps_{name}", []).append(got["rps"])
        finally:
            for cluster in clusters.values():
                cluster.stop()
    out: dict[str, object] = {k: round(sum(v) / len(v)) for k, v in results.items()}
    out["read_cost"] = round(1 - out["read_rps_auth_tls"] / out["read_rps_plain"], 3)  # type: ignore[operator]
    out["write_cost"] = round(1 - out["write_rps_auth_tls"] / out["write_rps_plain"], 3)  # type: ignore[operator]
    out.update({"connections": CONNECTIONS, "seconds_each": args.seconds})
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
