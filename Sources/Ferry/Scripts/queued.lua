-- Ferry: record a just-published job as queued, unless a worker got to it first.
--
-- KEYS[1]  the job's status hash  ferry:{Q}:job:<job_id>
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  how long the status lives if no worker ever runs the job, in milliseconds
-- ARGV[3]  the job id
-- ARGV[4]  the job type
-- ARGV[5]  the stream entry ID
--
-- Writes the job's own fields; a group that has not started the job has no state of its own
-- in the hash, which reads as 'queued'. Runs after the XADD, so a fast worker may already have
-- written its group's 'running': then only the job's own fields are added and the hash's expiry
-- is left as the worker set it. Returns 1 when the hash was new.
local new = redis.call('EXISTS', KEYS[1]) == 0
redis.call('HSET', KEYS[1], 'queued_at', ARGV[1], 'job_id', ARGV[3], 'type', ARGV[4], 'entry_id', ARGV[5])
if new then
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
