"""The production state store: Redis, with the apply function as a Lua script.

One script call applies a batch of one partition's events and stores the
partition's applied offset in the same atomic step; events at or below the
stored offset are skipped. The rules are those of :mod:`agentmem.node.apply`
(the reference), and a differential test on real Redis checks they agree.

Keys (Redis runs beside the node, one database per node):

- ``am:applied:{p}``  applied offset of partition p
- ``am:t:{p}``        log time (ms) of the last applied event of p
- ``am:r:{path}``     hash of a record: v (JSON text), ver, exp ('' or ms), upd
- ``am:i:{tenant/agent}``  set of the agent's keys
- ``am:a:{p}``        set of the agents (tenant/agent) that have keys in p
- ``am:e:{p}``        sorted set of expiring paths of p by expiry
- ``am:q:{p}:{tenant}/{rid}``  outcome|log time of a request id in partition p
- ``am:marker``       identity of this store's contents; a flushed or replaced
  Redis lacks it, and the script refuses to apply until the node rebuilt
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import Any, Final

import redis
import redis.asyncio as aioredis

from agentmem.node.apply import DEDUP_WINDOW_MS, GRACE_MS, SWEEP_LIMIT, Record
from agentmem.node.ports import LogRecord, StoreFullError, StoreResetError

APPLY_LUA: Final = r"""
local p = ARGV[1]
local window = tonumber(ARGV[2])
local grace = tonumber(ARGV[3])
local sweep_limit = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
if redis.call('GET', 'am:marker') ~= ARGV[6] then
  return redis.error_reply('AGENTMEM_STORE_RESET the state store lost its data')
end
local applied_key = 'am:applied:' .. p
local expiring_key = 'am:e:' .. p
local applied = tonumber(redis.call('GET', applied_key) or '-1')
local last_ts = nil
local out = {}
local function fmt(x) return string.format('%d', x) end
local function split(path)
  local a = string.find(path, '/', 1, true)
  local b = string.find(path, '/', a + 1, true)
  return string.sub(path, 1, b - 1), string.sub(path, b + 1)
end
local function remove(path)
  local agent_path, key = split(path)
  redis.call('DEL', 'am:r:' .. path)
  redis.call('SREM', 'am:i:' .. agent_path, key)
  redis.call('ZREM', expiring_key, path)
end
for i = 0, n - 1 do
  local offset = tonumber(ARGV[7 + 3 * i])
  local ts = tonumber(ARGV[8 + 3 * i])
  local payload = ARGV[9 + 3 * i]
  if offset <= applied then
    out[i + 1] = ''
  else
    applied = offset
    last_ts = ts
    local ok, ev = pcall(cjson.decode, payload)
    if not ok or type(ev) ~= 'table' or ev.v ~= 1 or type(ev.tenant) ~= 'string'
        or type(ev.agent) ~= 'string' or type(ev.key) ~= 'string' or type(ev.rid) ~= 'string'
        or type(ev.actor) ~= 'string'
        or (ev.op ~= 'put' and ev.op ~= 'merge' and ev.op ~= 'delete') then
      out[i + 1] = 'x'
    else
      local code = nil
      local rid_key = nil
      local rid = ev.rid
      if rid ~= '' then
        -- Per partition; '/' appears in neither a tenant nor a request id.
        rid_key = 'am:q:' .. p .. ':' .. ev.tenant .. '/' .. rid
        local seen = redis.call('GET', rid_key)
        if seen then
          local sep = string.find(seen, '|', 1, true)
          if ts - tonumber(string.sub(seen, sep + 1)) < window then
            code = 'd' .. string.sub(seen, 1, sep - 1)
          end
        end
      end
      if code then
        out[i + 1] = code
      else
        local agent_path = ev.tenant .. '/' .. ev.agent
        local path = agent_path .. '/' .. ev.key
        local rkey = 'am:r:' .. path
        local cur = redis.call('HMGET', rkey, 'ver', 'exp')
        local cur_ver = cur[1] and tonumber(cur[1]) or nil
        local live = cur_ver ~= nil and (cur[2] == '' or tonumber(cur[2]) > ts)
        local expect = ev.expect
        local pass
        if expect == nil or expect == cjson.null then
          pass = true
        elseif expect == 'absent' then
          pass = not live
        else
          pass = live and cur_ver == tonumber(expect)
        end
        if not pass then
          if live then code = 'c:' .. fmt(cur_ver) else code = 'c:-' end
        else
          if ev.op == 'delete' then
            remove(path)
          else
            local value = ev.value
            if type(value) ~= 'string' then value = 'null' end
            local exp = ev.expires_at
            if exp == nil or exp == cjson.null then
              redis.call('HSET', rkey, 'v', value, 'ver', fmt(offset), 'exp', '', 'upd', fmt(ts))
              redis.call('ZREM', expiring_key, path)
            else
              redis.call('HSET', rkey, 'v', value, 'ver', fmt(offset), 'exp', fmt(exp),
                         'upd', fmt(ts))
              redis.call('ZADD', expiring_key, exp, path)
            end
            redis.call('SADD', 'am:i:' .. agent_path, ev.key)
            redis.call('SADD', 'am:a:' .. p, agent_path)
          end
          code = 'a:' .. fmt(offset)
        end
        if rid_key then
          redis.call('SET', rid_key, code .. '|' .. fmt(ts), 'PX', window + grace)
        end
        out[i + 1] = code
      end
    end
  end
end
if last_ts then
  redis.call('SET', applied_key, fmt(applied))
  redis.call('SET', 'am:t:' .. p, fmt(last_ts))
  local due = redis.call('ZRANGEBYSCORE', expiring_key, '-inf', last_ts, 'LIMIT', 0, sweep_limit)
  for _, path in ipairs(due) do remove(path) end
end
return out
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(values: Sequence[Any]) -> Record | None:
    value, version, expires, updated = values
    if value is None or version is None:
        return None
    return Record(
        value=value.decode() if isinstance(value, bytes) else value,
        version=int(version),
        expires_at=int(expires) if expires else None,
        updated=int(updated or 0),
    )


class RedisStore:
    """State in a co-located Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sync = redis.Redis.from_url(url)
        self._apply = self._sync.register_script(APPLY_LUA)
        self._async = aioredis.Redis.from_url(url)
        self._lock = threading.Lock()
        self._marker = ""

    # Applier thread -------------------------------------------------------

    def check(self) -> None:
        """Fail early, with what to do, when Redis is unusable for agentmem."""
        policy = self._sync.config_get("maxmemory-policy").get("maxmemory-policy")
        if policy != "noeviction":
            raise RuntimeError(
                f"Redis at {self.url} has maxmemory-policy {policy}; agentmem needs noeviction "
                "(an evicted key would be silently lost state)"
            )

    def claim(self, wipe: bool = False) -> None:
        """Adopt the store's contents (or, with ``wipe``, erase them and start over)."""
        with self._lock:
            if wipe:
                for key in self._sync.scan_iter("am:*", count=1000):
                    self._sync.delete(key)
            marker = self._sync.get("am:marker")
            if marker is None:
                self._marker = uuid.uuid4().hex
                self._sync.set("am:marker", self._marker)
            else:
                self._marker = _text(marker)

    def verify(self) -> None:
        """Raise StoreResetError when the contents this node built are gone."""
        marker = self._sync.get("am:marker")
        if marker is None or _text(marker) != self._marker:
            raise StoreResetError(f"Redis at {self.url} lost its data")

    def applied_offsets(self, partitions: Sequence[int]) -> dict[int, int]:
        values = self._sync.mget([f"am:applied:{p}" for p in partitions]) if partitions else []
        return {p: int(v) if v is not None else -1 for p, v in zip(partitions, values, strict=True)}

    def apply(self, partition: int, records: Sequence[LogRecord]) -> list[str | None]:
        args: list[Any] = [
            partition, DEDUP_WINDOW_MS, GRACE_MS, SWEEP_LIMIT, len(records), self._marker,
        ]  # fmt: skip
        for r in records:
            args += [r.offset, r.timestamp, r.payload]
        try:
            with self._lock:
                result = self._apply(args=args)
        except redis.exceptions.ResponseError as exc:
            if "AGENTMEM_STORE_RESET" in str(exc):
                raise StoreResetError(f"Redis at {self.url} lost its data") from exc
            if "OOM" in str(exc):
                raise StoreFullError(f"Redis is full: {exc}") from exc
            raise
        return [(c.decode() if isinstance(c, bytes) else c) or None for c in result]

    def drop_partition(self, partition: int) -> None:
        """Remove every key of a partition this node no longer owns."""
        r = self._sync
        # The offset goes first: should this stop halfway, the partition is
        # replayed from the start if it ever comes back, never resumed mid-way.
        r.delete(f"am:applied:{partition}", f"am:t:{partition}")
        for agent_path in r.smembers(f"am:a:{partition}"):
            agent = _text(agent_path)
            keys = [_text(k) for k in r.smembers(f"am:i:{agent}")]
            pipe = r.pipeline(transaction=False)
            for key in keys:
                pipe.delete(f"am:r:{agent}/{key}")
            pipe.delete(f"am:i:{agent}")
            pipe.execute()
        r.delete(
            f"am:a:{partition}", f"am:e:{partition}", f"am:applied:{partition}", f"am:t:{partition}"
        )

    def stored_partitions(self) -> list[int]:
        """Partitions this store holds state of."""
        keys = self._sync.scan_iter("am:applied:*", count=1000)
        return sorted(int(_text(k).rsplit(":", 1)[1]) for k in keys)

    def log_times(self, partitions: Sequence[int]) -> dict[int, int]:
        values = self._sync.mget([f"am:t:{p}" for p in partitions]) if partitions else []
        return {p: int(v) for p, v in zip(partitions, values, strict=True) if v is not None}

    def memory(self) -> tuple[int, int]:
        """(used bytes, maxmemory bytes; 0 = unlimited)."""
        info = self._sync.info("memory")
        return int(info["used_memory"]), int(info.get("maxmemory", 0))

    def close_sync(self) -> None:
        """Close a store used without an event loop (tests, tools)."""
        self._sync.close()

    # Request path -----------------------------------------------------------

    async def get(self, path: str) -> Record | None:
        return _record(await self._async.hmget(f"am:r:{path}", ["v", "ver", "exp", "upd"]))

    async def get_many(self, paths: Sequence[str]) -> list[Record | None]:
        pipe = self._async.pipeline(transaction=False)
        for path in paths:
            pipe.hmget(f"am:r:{path}", ["v", "ver", "exp", "upd"])
        return [_record(v) for v in await pipe.execute()]

    async def keys(self, agent_path: str) -> list[str]:
        return sorted(_text(k) for k in await self._async.smembers(f"am:i:{agent_path}"))

    async def applied(self, partition: int) -> int:
        value = await self._async.get(f"am:applied:{partition}")
        return int(value) if value is not None else -1

    async def ping(self) -> bool:
        return bool(await self._async.ping())

    async def aclose(self) -> None:
        await self._async.aclose()
        self._sync.close()

    def snapshot(self) -> dict[str, Any]:
        """The logical state, shaped like :meth:`MemoryState.snapshot` (for tests)."""
        r = self._sync
        applied = {
            int(_text(k).rsplit(":", 1)[1]): int(r.get(k) or -1) for k in r.keys("am:applied:*")
        }
        times = [int(v) for k in r.keys("am:t:*") if (v := r.get(k)) is not None]
        horizon = max(times, default=0)
        records = {}
        for key in r.keys("am:r:*"):
            rec = _record(r.hmget(key, ["v", "ver", "exp", "upd"]))
            if rec is not None and rec.live(horizon):
                records[_text(key)[len("am:r:") :]] = (rec.value, rec.version, rec.expires_at)
        return {"applied": applied, "records": dict(sorted(records.items()))}
