-- Ferry idempotency guard: decide whether a job with an idempotency key may run now.
--
-- KEYS[1]  the job stream     ferry:{Q}:jobs
-- KEYS[2]  the done marker    ferry:{Q}:idem:done:<key>
-- KEYS[3]  the in-flight lock ferry:{Q}:idem:lock:<key>
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  the lock's time to live in milliseconds (two leases and 2 s)
--
-- The lock belongs to one delivery: its token is the entry ID, the consumer and the entry's
-- delivery count, which every redelivery (a reclaim by another worker, or by this one) raises.
-- A worker whose lease ran out (frozen, cut off from Redis) still holds the lock until it
-- expires, so the delivery that reclaimed its entry waits ('busy') instead of running beside
-- it; the worker stops its handler before the lock can expire (Worker's lock fence).
--
-- Returns {'skip'} when the key already completed (the entry is acknowledged here, without
-- running), {'run', token} when this delivery took the lock, {'busy'} when another delivery
-- holds it, and {'lost'} when this consumer no longer owns the entry.
-- ferry:prelude
local pending = owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not pending then
  return {'lost'}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return {'skip'}
end
local token = ARGV[3] .. ' ' .. ARGV[2] .. ' ' .. pending[4]
if redis.call('SET', KEYS[3], token, 'NX', 'PX', ARGV[4]) then
  return {'run', token}
end
return {'busy'}
