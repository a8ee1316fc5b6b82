-- Ferry idempotency guard: decide whether a job with an idempotency key may run now.
--
-- KEYS[1]  the job stream     ferry:{Q}:jobs
-- KEYS[2]  the done marker    ferry:{Q}:idem:done:<key>
-- KEYS[3]  the in-flight lock ferry:{Q}:idem:lock:<key>
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  the lock's time to live in milliseconds (two leases and 2 s)
-- KEYS[4]  (when job status is kept) the status hash ferry:{Q}:job:<job_id>
-- ARGV[5..10]  (with KEYS[4]) now (ms), how long a succeeded status stays (ms), the index
--          prefix ferry:{Q}:idx:, the job id, its type, and this delivery's attempt number
--
-- The lock belongs to one delivery: its token is the entry ID, the consumer and the entry's
-- delivery count, which every redelivery (a reclaim by another worker, or by this one) raises.
-- A worker whose lease ran out (frozen, cut off from Redis) still holds the lock until it
-- expires, so the delivery that reclaimed its entry waits ('busy') instead of running beside
-- it; the worker stops its handler before the lock can expire (Worker's lock fence).
--
-- Returns {'skip'} when the key already completed (the entry is acknowledged here, without
-- running, and its status says succeeded), {'run', token} (its status says running) when this delivery took the lock, {'busy'} when another delivery
-- holds it, and {'lost'} when this consumer no longer owns the entry.
-- ferry:function-flags allow-oom
-- ferry:prelude
local pending, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not pending then
  return {'lost'}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('XACK', lane, ARGV[1], ARGV[3])
  if KEYS[4] then
    set_status(KEYS[4], ARGV[7], ARGV[1], ARGV[8], ARGV[3], 'succeeded', ARGV[5], ARGV[6],
      { 'attempts', ARGV[10], 'consumer', ARGV[2], 'finished_at', ARGV[5], 'retryable', '0',
        'note', 'idempotent_skip: the key had already completed' }, { 'type', ARGV[9] })
  end
  return {'skip'}
end
local token = ARGV[3] .. ' ' .. ARGV[2] .. ' ' .. pending[4]
if redis.call('SET', KEYS[3], token, 'NX', 'PX', ARGV[4]) then
  if KEYS[4] then
    local first = ARGV[10] == '1'
    local fields = { 'attempts', ARGV[10], 'consumer', ARGV[2], 'started_at', ARGV[5] }
    if not first then
      fields[#fields + 1] = 'next_attempt_at'
      fields[#fields + 1] = ''
    end
    set_status(KEYS[4], ARGV[7], ARGV[1], ARGV[8], ARGV[3], 'running', ARGV[5], 0, fields, { 'type', ARGV[9] },
      first and 'none' or nil)
  end
  return {'run', token}
end
return {'busy'}
