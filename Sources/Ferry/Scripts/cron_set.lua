-- Ferry: store a cron schedule (ferry cron set), replacing one of the same name.
--
-- KEYS[1]  the queue's schedule index  ferry:{Q}:cron (sorted set: name -> next tick, ms)
-- KEYS[2]  the schedule                ferry:{Q}:cron:<name> (hash)
-- ARGV[1]  the schedule's name
-- ARGV[2]  its next tick, ms since the epoch (computed from Redis's clock), or '' for none
-- ARGV[3]  now, ms
-- ARGV[4..] the schedule's fields and values (timing, `job.*` fields, catch_up, overlap)
--
-- What the schedule has done (last tick, its job, skipped ticks) and whether it is paused
-- outlive a replacement; everything else is replaced. A paused schedule stays out of the index.
-- Schedules are configuration: they live until `ferry cron delete`. Returns 1 when it replaced
-- one, else 0.
local kept = redis.call('HMGET', KEYS[2], 'last_at', 'last_job_id', 'last_entry_id', 'skipped', 'paused', 'created_at')
local existed = redis.call('EXISTS', KEYS[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'name', ARGV[1], 'next_at', ARGV[2], 'updated_at', ARGV[3], 'created_at', kept[6] or ARGV[3],
  'paused', kept[5] or '0', 'skipped', kept[4] or '0', unpack(ARGV, 4))
local names = { 'last_at', 'last_job_id', 'last_entry_id' }
for i = 1, 3 do
  if kept[i] then
    redis.call('HSET', KEYS[2], names[i], kept[i])
  end
end
if ARGV[2] ~= '' and kept[5] ~= '1' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
return existed
