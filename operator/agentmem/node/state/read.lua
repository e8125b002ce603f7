#!lua flags=no-writes
-- Reads records (or an agent's key set) in the same step as the marker check,
-- so a read never answers from a Redis that was flushed or replaced: it fails
-- instead, and the node rebuilds before it answers again.
--
-- ARGV: marker, 'records' | 'members' | 'union' | 'sizes'; KEYS: the hashes,
-- the one set to read, the sets to unite, or the sets to count.
if redis.call('GET', 'am:marker') ~= ARGV[1] then
  return redis.error_reply('AGENTMEM_STORE_RESET the state store lost its data')
end
if ARGV[2] == 'members' then
  return redis.call('SMEMBERS', KEYS[1])
end
if ARGV[2] == 'union' then
  return redis.call('SUNION', unpack(KEYS))
end
if ARGV[2] == 'sizes' then
  local sizes = {}
  for i, key in ipairs(KEYS) do
    sizes[i] = redis.call('SCARD', key)
  end
  return sizes
end
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.call('HMGET', key, 'v', 'ver', 'exp', 'upd')
end
return out
