-- Ferry idempotency guard: decide whether a job with an idempotency key may run now.
--
-- KEYS[1]  the job stream     ferry:{Q}:jobs
-- KEYS[2]  the done marker    ferry:{Q}:idem:done:<key>
-- KEYS[3]  the in-flight lock ferry:{Q}:idem:lock:<key>
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID (also the lock's token)
-- ARGV[4]  the lock's time to live in milliseconds (the lease)
--
-- Returns 'skip' when the key already completed (the entry is acknowledged here, without
-- running), 'run' when this entry holds the lock (taken now, or still its own from an earlier
-- delivery), 'busy' when another entry with the same key is running, and 'lost' when this
-- consumer no longer owns the entry.
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not (pending[1] and pending[1][2] == ARGV[2]) then
  return 'lost'
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  return 'skip'
end
if redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
  return 'run'
end
if redis.call('GET', KEYS[3]) == ARGV[3] then
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
  return 'run'
end
return 'busy'
