-- Ferry: ask for a job to be cancelled.
--
-- KEYS[1]  the job's status hash  ferry:{Q}:job:<job_id>
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  how long a request for a job with no status yet is kept, in milliseconds
-- ARGV[3]  the job id
--
-- Sets cancel_requested. Workers check it before running a job (which is then acknowledged as
-- cancelled without running) and, for running jobs, with every lease extension (the handler is
-- cancelled). Returns the job's state before the request: a finished job ('succeeded', 'dead',
-- 'cancelled') is left alone; 'unknown' means no worker has recorded the job yet.
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'succeeded' or state == 'dead' or state == 'cancelled' then
  return state
end
redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[1], 'updated_at', ARGV[1], 'job_id', ARGV[3])
if not state then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'unknown'
end
return state
