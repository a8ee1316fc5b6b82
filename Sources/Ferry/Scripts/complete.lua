-- Ferry idempotency guard: a job with an idempotency key succeeded.
--
-- KEYS[1]  the job stream     ferry:{Q}:jobs
-- KEYS[2]  the done marker    ferry:{Q}:idem:done:<key>
-- KEYS[3]  the in-flight lock ferry:{Q}:idem:lock:<key>
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  how long the done marker lives, in milliseconds
-- ARGV[5]  the job id, stored in the done marker
-- ARGV[6]  the lock's token, from begin.lua
-- KEYS[4]  (when job status is kept) the status hash ferry:{Q}:job:<job_id>
-- ARGV[7]  (with KEYS[4]) now, in milliseconds since the epoch
-- ARGV[8]  (with KEYS[4]) how long a succeeded job's status stays, in milliseconds
-- ARGV[9]  (with KEYS[4]) how long the handler ran, in milliseconds (processing_ms)
-- ARGV[10] (with KEYS[4]) the index prefix  ferry:{Q}:idx:
--
-- Acknowledges the entry, marks the key done, releases the lock and records the success in one
-- step, so no crash can leave a key acknowledged but not marked (it would run again), marked
-- but pending, or done while its status still says running. As ack.lua does for other jobs.
-- Returns 1, or 0 when this consumer no longer owns the entry: nothing of the entry is written
-- then. But when this delivery still holds the key's lock (its lease ran out while the handler
-- ran, on a stalled machine, and another worker took the entry and parked it as busy), the
-- handler did run to its end under the guard: the key is marked done and the lock released, so
-- the parked delivery skips it instead of running it a second time once the lock lapses.
-- ferry:function-flags allow-oom
-- ferry:prelude
local record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not record then
  if redis.call('GET', KEYS[3]) == ARGV[6] then
    redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
    redis.call('DEL', KEYS[3])
  end
  return 0
end
redis.call('XACK', lane, ARGV[1], ARGV[3])
redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[4])
if redis.call('GET', KEYS[3]) == ARGV[6] then
  redis.call('DEL', KEYS[3])
end
if KEYS[4] then
  set_status(KEYS[4], ARGV[10], ARGV[1], ARGV[5], ARGV[3], 'succeeded', ARGV[7], ARGV[8],
    { 'progress', '100', 'finished_at', ARGV[7], 'processing_ms', ARGV[9], 'retryable', '0' }, nil, 'running')
end
return 1
