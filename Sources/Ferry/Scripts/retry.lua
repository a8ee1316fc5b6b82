-- Ferry: schedule the redelivery of a failed job this consumer owns.
--
-- KEYS[1]  the job stream            ferry:{Q}:jobs
-- KEYS[2]  the earliest-retry hash   ferry:{Q}:retry_after
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the lease, in milliseconds
-- ARGV[4]  the entry ID
-- ARGV[5]  the earliest redelivery time in ms since the epoch, or 0 for none
-- KEYS[3]  (when job status is kept) the status hash ferry:{Q}:job:<job_id>
-- ARGV[6..13]  (with KEYS[3]) now (ms), the index prefix ferry:{Q}:idx:, the job id, the
--          attempt that failed, its error class, its error, how long its handler ran (ms), and
--          when the next attempt comes (ms since the epoch)
--
-- The entry's idle time is set to the lease (JUSTID: the delivery count does not grow), so the
-- reclaim, which waits for lease + backoff, hands it out once the backoff has passed. An
-- earliest time (a handler's Retry-After) is kept in KEYS[2] until claim.lua claims the entry.
-- The status says 'retrying' in the same step. Returns 1, or 0 when this consumer no longer
-- owns the entry (nothing is written then).
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
if KEYS[3] then
  set_status(KEYS[3], ARGV[7], ARGV[1], ARGV[8], ARGV[4], 'retrying', ARGV[6], 0,
    { 'attempts', ARGV[9], 'consumer', ARGV[2], 'error_class', ARGV[10], 'last_error', ARGV[11],
      'processing_ms', ARGV[12], 'next_attempt_at', ARGV[13], 'retryable', '1' }, nil, 'running')
end
return 1
