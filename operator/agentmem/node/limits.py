"""What one tenant, and one client, may take of a node: quotas and bounds.

Admission happens in the HTTP layer, after the token is verified and before
the node does any work. Over a limit, a request is refused with 429 and
``Retry-After``; nothing is appended to the log.

Per tenant (``spec.quotas``; enforced by each node, for the requests it
accepts): a write rate (a token bucket: ``writesPerSecond`` refilled,
``burst`` at most) and concurrent watch streams. Per client (the token's
subject, on each node): requests that wait (session or strong reads,
``min_version``), watch streams and history pages in flight. These bound what
one caller can make a node hold in memory, whatever its quota.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agentmem.node.errors import OverLimit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TenantQuota:
    #: Writes per second admitted on this node (0: no limit), and the burst above it.
    writes_per_second: float = 0.0
    burst: int = 0
    #: Concurrent watch streams on this node (0: no limit).
    watchers: int = 0
    #: Bytes of live values across the cluster (0: no limit), as the durable store
    #: counts them every ``usage_interval`` seconds.
    stored_bytes: int = 0

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], where: str) -> TenantQuota:
        try:
            rate = float(doc.get("writesPerSecond", 0))
            burst = int(doc.get("burst", 0))
            watchers = int(doc.get("watchers", 0))
            stored = int(doc.get("storedBytes", 0))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        if rate < 0 or burst < 0 or watchers < 0 or stored < 0:
            raise ValueError(f"{where}: limits are zero (none) or positive")
        return cls(rate, burst or max(1, int(rate)), watchers, stored)


@dataclass(frozen=True)
class ClientBounds:
    """What one client (a token subject) may hold on a node at once."""

    waiting: int = 256
    watchers: int = 32
    history: int = 4


@dataclass(frozen=True)
class Quotas:
    default: TenantQuota = TenantQuota()
    tenants: Mapping[str, TenantQuota] | None = None
    client: ClientBounds = ClientBounds()
    #: How often the stored bytes of every tenant are counted.
    usage_interval: float = 30.0

    @property
    def counts_storage(self) -> bool:
        quotas = [self.default, *(self.tenants or {}).values()]
        return any(q.stored_bytes for q in quotas)

    @classmethod
    def from_json(cls, text: str) -> Quotas:
        """``{"default": {...}, "tenants": {"acme": {...}}, "client": {...}}``."""
        try:
            doc = json.loads(text) if text else {}
        except ValueError as exc:
            raise ValueError(f"quotas: not JSON: {exc}") from None
        default = TenantQuota.from_dict(doc.get("default") or {}, "quotas.default")
        tenants = {
            name: TenantQuota.from_dict(q, f"quotas.tenants.{name}")
            for name, q in (doc.get("tenants") or {}).items()
        }
        client = doc.get("client") or {}
        bounds = ClientBounds(
            waiting=int(client.get("waiting", ClientBounds.waiting)),
            watchers=int(client.get("watchers", ClientBounds.watchers)),
            history=int(client.get("history", ClientBounds.history)),
        )
        interval = float(doc.get("usageIntervalSeconds", 30.0))
        return cls(default, tenants, bounds, interval)

    def of(self, tenant: str) -> TenantQuota:
        return (self.tenants or {}).get(tenant, self.default)


class _Bucket:
    __slots__ = ("at", "level")

    def __init__(self, level: float, at: float) -> None:
        self.level, self.at = level, at


class Admission:
    """The counters of one node (used from its event loop only: no locks)."""

    def __init__(self, quotas: Quotas, clock: Any = time.monotonic) -> None:
        self.quotas = quotas
        self.clock = clock
        self._buckets: dict[str, _Bucket] = {}
        #: Stored bytes of each tenant, as last counted (see :meth:`count_storage`).
        self.usage: dict[str, int] = {}
        self._held: dict[tuple[str, str], int] = {}  # (kind, who) -> in use

    def write(self, tenant: str, grows: bool = True) -> None:
        """Take one write from the tenant's bucket, or raise 429; a write that may
        grow the tenant's memory (not a delete) also needs room in its storage."""
        quota = self.quotas.of(tenant)
        if grows and quota.stored_bytes and self.usage.get(tenant, 0) >= quota.stored_bytes:
            raise OverLimit(
                f"tenant {tenant!r} stores {self.usage[tenant]} bytes, its quota is "
                f"{quota.stored_bytes}: delete keys (or let them expire) to write again",
                code="stored_bytes_exceeded",
                retry_after=self.quotas.usage_interval,
            )
        if quota.writes_per_second <= 0:
            return
        now = self.clock()
        bucket = self._buckets.get(tenant)
        if bucket is None:
            bucket = self._buckets[tenant] = _Bucket(float(quota.burst), now)
        bucket.level = min(
            float(quota.burst), bucket.level + (now - bucket.at) * quota.writes_per_second
        )
        bucket.at = now
        if bucket.level < 1.0:
            wait = (1.0 - bucket.level) / quota.writes_per_second
            raise OverLimit(
                f"tenant {tenant!r} is over its write rate of {quota.writes_per_second:g}/s on "
                f"this node; retry after {wait:.2f} s",
                code="write_rate_exceeded",
                retry_after=max(1.0, wait),
            )
        bucket.level -= 1.0

    async def count_storage(self, count: Callable[[], dict[str, int]]) -> None:
        """Count every tenant's stored bytes with ``count`` (blocking: run in a thread)
        every ``usage_interval`` seconds, until cancelled."""
        while True:
            try:
                self.usage = await asyncio.to_thread(count)
            except Exception as exc:
                log.warning("counting the tenants' stored bytes failed: %s", exc)
            await asyncio.sleep(self.quotas.usage_interval)

    @contextmanager
    def hold(self, kind: str, tenant: str, subject: str) -> Iterator[None]:
        """Hold one of ``kind`` (watcher, waiting, history) for the tenant and the client."""
        limits = [(("client-" + kind, subject), getattr(self.quotas.client, kind))]
        if kind == "watchers":
            limits.append((("tenant-watchers", tenant), self.quotas.of(tenant).watchers))
        for key, limit in limits:
            if limit and self._held.get(key, 0) >= limit:
                whose = (
                    f"client {subject!r}" if key[0].startswith("client") else f"tenant {tenant!r}"
                )
                raise OverLimit(
                    f"{whose} already has {limit} {kind.replace('_', ' ')} on this node (the "
                    "limit); close one, or retry later",
                    code="too_many_" + kind,
                    retry_after=1.0,
                )
        for key, _ in limits:
            self._held[key] = self._held.get(key, 0) + 1
        try:
            yield
        finally:
            for key, _ in limits:
                left = self._held[key] - 1
                if left:
                    self._held[key] = left
                else:
                    del self._held[key]
