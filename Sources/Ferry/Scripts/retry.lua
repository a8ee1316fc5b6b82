-- Ferry: schedule the redelivery of a failed job this consumer owns.
--
-- KEYS[1]  the job stream            ferry:{Q}:jobs
-- KEYS[2]  the earliest-retry hash   ferry:{Q}:retry_after
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the lease, in milliseconds
-- ARGV[4]  the entry ID
-- ARGV[5]  the earliest redelivery time in ms since the epoch, or 0 for none
--
-- The entry's idle time is set to the lease (JUSTID: the delivery count does not grow), so the
-- reclaim, which waits for lease + backoff, hands it out once the backoff has passed. An
-- earliest time (a handler's Retry-After) is kept in KEYS[2] until claim.lua claims the entry.
-- Returns 1, or 0 when this consumer no longer owns the entry.
-- ferry:prelude
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[4]) then
  return 0
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[4], 'IDLE', ARGV[3], 'JUSTID')
local notBefore = tonumber(ARGV[5])
if notBefore > 0 then
  redis.call('HSET', KEYS[2], ARGV[4] .. ' ' .. ARGV[1], ARGV[5])
  -- The hash outlives every time in it by a day, and never lingers once unused.
  local keep = notBefore - now_ms() + 86400000
  if redis.call('PTTL', KEYS[2]) < keep then
    redis.call('PEXPIRE', KEYS[2], keep)
  end
end
return 1
