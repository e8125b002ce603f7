"""A workload of agents writing and reading through the router, that counts what an
agent would notice: writes that failed, acknowledged writes that were lost, and
session reads that missed a write the agent had seen acknowledged.

Each writer owns its agents and writes their keys one at a time, every write
with a request id of its own; a retryable answer (503, 504, a connection that
failed) is retried with the same request id until it is acknowledged or the
write's deadline passes (then it counts as failed). After every acknowledged
write the writer reads the key back at the version it was given (a session
read): an older value is a miss.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

RETRYABLE = {421, 429, 500, 502, 503, 504}


@dataclass
class Counts:
    ops: int = 0  # writes attempted (a retried write counts once)
    acked: int = 0
    failed: int = 0
    retries: int = 0
    reads: int = 0
    missed_reads: int = 0
    lost: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    write_ms: list[float] = field(default_factory=list)
    #: (monotonic time of the ack, write latency in ms)
    timeline: list[tuple[float, float]] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Workload:
    def __init__(
        self,
        base: Callable[[], str],
        writers: int = 4,
        agents_per_writer: int = 5,
        keys: int = 5,
        write_deadline: float = 90.0,
        pause: float = 0.0,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base = base  # the router's URL (asked again before each try)
        self.auth = {"Authorization": f"Bearer {token}"} if token else {}
        self.ssl: ssl.SSLContext | bool = ssl_context if ssl_context is not None else True
        self.writers = writers
        self.agents_per_writer = agents_per_writer
        self.keys = keys
        self.write_deadline = write_deadline
        self.pause = pause
        self.counts = Counts()
        #: path -> (value, version) of the last acknowledged write
        self.acked: dict[str, tuple[int, str]] = {}
        self.first_misses: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._run_id = uuid.uuid4().hex[:6]

    # lifecycle ----------------------------------------------------------------------

    def start(self) -> Workload:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Counts:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.write_deadline + 30)
        return self.counts

    def max_outage(self) -> float:
        """The longest time without an acknowledged write while the workload ran."""
        times = sorted(t for t, _ in self.counts.timeline)
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    # the workload ----------------------------------------------------------------------

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=15)
        connector = aiohttp.TCPConnector(ssl=self.ssl)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as s:
            await asyncio.gather(*(self._writer(s, w) for w in range(self.writers)))

    async def _request(
        self, s: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
    ) -> tuple[int, Any]:
        try:
            headers = {**self.auth, **kwargs.pop("headers", {})}
            async with s.request(method, self.base() + path, headers=headers, **kwargs) as r:
                text = await r.text()
                try:
                    return r.status, json.loads(text)
                except ValueError:
                    return r.status, text
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, {"error": type(exc).__name__}

    async def _writer(self, s: aiohttp.ClientSession, w: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            agent = f"w{w}-a{n % self.agents_per_writer}"
            key = f"k{n % self.keys}"
            path = f"/v1/tenants/load/agents/{agent}/keys/{key}"
            rid = f"{self._run_id}-{w}-{n}"
            self.counts.ops += 1
            started = time.monotonic()
            version = await self._write(s, path, n, rid, started)
            if version is None:
                self.counts.failed += 1
                continue
            elapsed = (time.monotonic() - started) * 1000
            self.counts.acked += 1
            self.counts.write_ms.append(elapsed)
            self.counts.timeline.append((time.monotonic(), elapsed))
            self.acked[f"{agent}/{key}"] = (n, version)
            await self._read_back(s, path, n, version)
            if self.pause:
                await asyncio.sleep(self.pause)

    async def _write(
        self, s: aiohttp.ClientSession, path: str, value: int, rid: str, started: float
    ) -> str | None:
        delay = 0.05
        while time.monotonic() - started < self.write_deadline:
            status, body = await self._request(
                s, "PUT", path, data=json.dumps(value),
                headers={"Content-Type": "application/json", "X-Request-Id": rid},
            )  # fmt: skip
            if status == 200:
                return str(body["version"])
            code = body.get("error", "?") if isinstance(body, dict) else "?"
            self.counts.error(f"{status} {code}")
            if status and status not in RETRYABLE:
                return None
            self.counts.retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        return None

    async def _read_back(
        self, s: aiohttp.ClientSession, path: str, value: int, version: str
    ) -> None:
        deadline = time.monotonic() + self.write_deadline
        while time.monotonic() < deadline:
            status, body = await self._request(s, "GET", f"{path}?min_version={version}")
            if status in RETRYABLE or status == 0:
                await asyncio.sleep(0.1)
                continue
            self.counts.reads += 1
            if status != 200 or body["value"] < value:
                self.counts.missed_reads += 1
                if len(self.first_misses) < 5:
                    self.first_misses.append(f"{path}@{version}: {status} {body}")
            return
        self.counts.error("read-back timed out")

    # the end -----------------------------------------------------------------------

    def verify(self) -> int:
        """Strong-read every key acknowledged: count those that lost their last write."""

        async def check() -> int:
            lost = 0
            async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30),
                connector=aiohttp.TCPConnector(ssl=self.ssl),
            ) as s:
                for path, (value, _version) in sorted(self.acked.items()):
                    agent, key = path.split("/")
                    url = f"/v1/tenants/load/agents/{agent}/keys/{key}?consistency=strong"
                    for _ in range(100):
                        status, body = await self._request(s, "GET", url)
                        if status not in RETRYABLE and status != 0:
                            break
                        await asyncio.sleep(0.2)
                    if status != 200 or body["value"] != value:
                        lost += 1
                        if len(self.first_misses) < 10:
                            self.first_misses.append(f"lost {path}: {status} {body}, wrote {value}")
            return lost

        self.counts.lost = asyncio.run(check())
        return self.counts.lost

    def summary(self) -> dict[str, Any]:
        ms = sorted(self.counts.write_ms) or [0.0]
        return {
            "ops": self.counts.ops,
            "acked": self.counts.acked,
            "failed": self.counts.failed,
            "retries": self.counts.retries,
            "reads": self.counts.reads,
            "missed_reads": self.counts.missed_reads,
            "lost": self.counts.lost,
            "write_p99_ms": round(ms[int(len(ms) * 0.99)], 1),
            "max_write_outage_s": round(self.max_outage(), 2),
            "errors": self.counts.errors,
        }
