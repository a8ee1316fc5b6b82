-- Ferry: forget consumers that left without saying goodbye (a worker killed by kill -9 never
-- runs release_consumer.lua), so XINFO CONSUMERS and dashboards show the workers that exist.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name (never deleted here)
-- ARGV[3]  how long a consumer must have been idle, in milliseconds
--
-- Only a consumer that holds no pending entry is deleted: XGROUP DELCONSUMER would drop its
-- pending entries, and nobody could reclaim them. The check and the deletion are one step.
-- Returns the names deleted.
-- ferry:function-flags allow-oom
local deleted = {}
for _, consumer in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local info = {}
  for i = 1, #consumer, 2 do
    info[consumer[i]] = consumer[i + 1]
  end
  if info['name'] ~= ARGV[2] and tonumber(info['pending']) == 0 and tonumber(info['idle']) >= tonumber(ARGV[3]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], info['name'])
    deleted[#deleted + 1] = info['name']
  end
end
return deleted
