-- Ferry: ask for a job to be cancelled.
--
-- KEYS[1]  the job's status hash  ferry:{Q}:job:<job_id>
-- KEYS[2]  the cancel requests    ferry:{Q}:cancel_requests (sorted set: job id -> expiry, ms)
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  how long the request is kept, in milliseconds
-- ARGV[3]  the job id
-- ARGV[4]  '1' to record the request for a job with no status yet (one still to be published,
--          or published without a status, as by a plain XADD); '0' to leave such a job alone
--
-- Adds the job id to the cancel requests, where workers look before running a read batch (a
-- requested job is then acknowledged as cancelled without running) and, for running jobs, with
-- every lease extension (the handler is cancelled); expired requests are trimmed here. The
-- status hash gets cancel_requested, for people reading it. Returns the job's state before the
-- request: a finished job ('succeeded', 'dead', 'cancelled', 'deleted') is left alone; 'unknown' means the
-- job has no status (nothing is written unless ARGV[4] is '1').
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'dead' or state == 'cancelled' or state == 'deleted' then
  return state
end
if not state and ARGV[4] ~= '1' then
  return 'unknown'
end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[1], 'updated_at', ARGV[1], 'job_id', ARGV[3])
if not state then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'unknown'
end
return state
