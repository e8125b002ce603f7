#!lua
-- Applies a batch of one partition's events inside Redis, with the rules of
-- agentmem/node/apply.py (the reference it is tested against). Without flags
-- the script is refused as a whole when Redis is over maxmemory: a batch is
-- applied entirely or not at all, never halfway.
--
-- ARGV: partition, dedup window (ms), sweep limit, trim limit, n, marker,
--       then n times: offset, log time (ms), payload
local p = ARGV[1]
local window = tonumber(ARGV[2])
local sweep_limit = tonumber(ARGV[3])
local trim_limit = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
if redis.call('GET', 'am:marker') ~= ARGV[6] then
  return redis.error_reply('AGENTMEM_STORE_RESET the state store lost its data')
end
local applied_key = 'am:applied:' .. p
local expiring_key = 'am:e:' .. p
local rids_key = 'am:q:' .. p
local rid_queue_key = 'am:ql:' .. p
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
        or (ev.op ~= 'put' and ev.op ~= 'merge' and ev.op ~= 'delete' and ev.op ~= 'tick') then
      out[i + 1] = 'x'
    elseif ev.op == 'tick' then
      out[i + 1] = 't'
    else
      local code = nil
      local rid = ev.rid
      -- Per partition; a tenant contains no '/', so tenant/rid names one id.
      local rid_key = ev.tenant .. '/' .. rid
      if rid ~= '' then
        local seen = redis.call('HGET', rids_key, rid_key)
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
        if rid ~= '' then
          redis.call('HSET', rids_key, rid_key, code .. '|' .. fmt(ts))
          -- in log order, so the oldest is at the head
          redis.call('RPUSH', rid_queue_key, fmt(ts) .. '|' .. rid_key)
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
  -- Request ids out of the window leave from the head of the queue; a hash
  -- entry decided again later (same id, after the window) stays.
  for _ = 1, trim_limit do
    local head = redis.call('LINDEX', rid_queue_key, 0)
    if not head then break end
    local sep = string.find(head, '|', 1, true)
    local head_ts = string.sub(head, 1, sep - 1)
    if tonumber(head_ts) > last_ts - window then break end
    redis.call('LPOP', rid_queue_key)
    local key = string.sub(head, sep + 1)
    local seen = redis.call('HGET', rids_key, key)
    if seen and string.sub(seen, string.find(seen, '|', 1, true) + 1) == head_ts then
      redis.call('HDEL', rids_key, key)
    end
  end
end
return out
