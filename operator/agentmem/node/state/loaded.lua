#!lua flags=allow-oom
-- Ends the load of a partition from the durable store: its applied offset and
-- log time are set last, so a load cut short is started again from scratch.
--
-- ARGV: marker, partition, offset, log time
if redis.call('GET', 'am:marker') ~= ARGV[1] then
  return redis.error_reply('AGENTMEM_STORE_RESET the state store lost its data')
end
redis.call('SET', 'am:applied:' .. ARGV[2], ARGV[3])
redis.call('SET', 'am:t:' .. ARGV[2], ARGV[4])
return 1
