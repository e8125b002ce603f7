"""Records read from the state, kept in process so most reads skip a round trip.

The cache stays exact without invalidation messages: the applier is the
state's only writer, and it drops every path it changes (:meth:`forget`). A
read that was in flight while its path changed is not remembered.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agentmem.store.ports import Record

Loader = Callable[[Sequence[str]], Awaitable[list[Record | None]]]


class RecordCache:
    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._cache: dict[str, Record | None] = {}
        self._inflight: dict[str, int] = {}
        self._dirty: set[str] = set()
        self.hits = 0
        self.misses = 0

    def forget(self, path: str) -> None:
        self._cache.pop(path, None)
        if path in self._inflight:
            self._dirty.add(path)

    def forget_all(self) -> None:
        self._cache.clear()
        self._dirty.update(self._inflight)

    def _remember(self, path: str, record: Record | None) -> None:
        cache = self._cache
        if len(cache) >= self.entries:
            cache.pop(next(iter(cache)))  # the oldest entry
        cache[path] = record

    def lookup(self, paths: Sequence[str]) -> tuple[list[Record | None], list[str]]:
        """The cached records of ``paths`` (None where not cached), and the paths missing."""
        cache = self._cache
        out: list[Record | None] = []
        missing: list[str] = []
        for path in paths:
            if path in cache:
                out.append(cache[path])
            else:
                out.append(None)
                missing.append(path)
        self.hits += len(paths) - len(missing)
        self.misses += len(missing)
        return out, missing

    async def get(self, paths: Sequence[str], load: Loader) -> list[Record | None]:
        """The records of ``paths`` (absent: None), from the cache or ``load``."""
        out, missing = self.lookup(paths)
        if not missing:
            return out
        return await self.fill(paths, out, missing, load)

    async def fill(
        self, paths: Sequence[str], out: list[Record | None], missing: list[str], load: Loader
    ) -> list[Record | None]:
        """Complete a :meth:`lookup` with the missing records from ``load``."""
        fetched = dict(zip(missing, await self._fetch(missing, load), strict=True))
        return [fetched.get(p, r) for p, r in zip(paths, out, strict=True)]

    async def _fetch(self, paths: Sequence[str], load: Loader) -> list[Record | None]:
        inflight = self._inflight
        for path in paths:
            inflight[path] = inflight.get(path, 0) + 1
        try:
            records = await load(paths)
        finally:
            changed = []
            for path in paths:
                left = inflight[path] - 1
                changed.append(path in self._dirty)
                if left:
                    inflight[path] = left
                else:
                    del inflight[path]
                    self._dirty.discard(path)
        for path, record, stale in zip(paths, records, changed, strict=True):
            if not stale:
                self._remember(path, record)
        return records
