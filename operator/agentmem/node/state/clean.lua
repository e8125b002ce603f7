#!lua flags=allow-oom
-- Frees memory when Redis is full: removes a partition's records expired and
-- request ids forgotten by its log time (rule 6 of apply.py, which only ever
-- deletes what the apply rules already treat as absent).
--
-- ARGV: marker, partition, dedup window (ms), limit
if redis.call('GET', 'am:marker') ~= ARGV[1] then
  return redis.error_reply('AGENTMEM_STORE_RESET the state store lost its data')
end
local p = ARGV[2]
local now = tonumber(redis.call('GET', 'am:t:' .. p) or '-1')
if now < 0 then return 0 end
local limit = tonumber(ARGV[4])
local expiring_key = 'am:e:' .. p
local removed = 0
for _, path in ipairs(redis.call('ZRANGEBYSCORE', expiring_key, '-inf', now, 'LIMIT', 0, limit)) do
  local a = string.find(path, '/', 1, true)
  local b = string.find(path, '/', a + 1, true)
  redis.call('DEL', 'am:r:' .. path)
  redis.call('SREM', 'am:i:' .. string.sub(path, 1, b - 1), string.sub(path, b + 1))
  redis.call('ZREM', expiring_key, path)
  removed = removed + 1
end
local cutoff = now - tonumber(ARGV[3])
for _ = 1, limit do
  local head = redis.call('LINDEX', 'am:ql:' .. p, 0)
  if not head then break end
  local sep = string.find(head, '|', 1, true)
  local head_ts = string.sub(head, 1, sep - 1)
  if tonumber(head_ts) > cutoff then break end
  redis.call('LPOP', 'am:ql:' .. p)
  local key = string.sub(head, sep + 1)
  local seen = redis.call('HGET', 'am:q:' .. p, key)
  if seen and string.sub(seen, string.find(seen, '|', 1, true) + 1) == head_ts then
    redis.call('HDEL', 'am:q:' .. p, key)
  end
  removed = removed + 1
end
return removed
