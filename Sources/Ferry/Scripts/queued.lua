-- Ferry: record a just-published job as queued, unless a worker got to it first.
--
-- KEYS[1]  the job's status hash  ferry:{Q}:job:<job_id>
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  how long the status lives if no worker ever runs the job, in milliseconds
-- ARGV[3]  the job id
-- ARGV[4]  the job type
-- ARGV[5]  the stream entry ID
--
-- Runs after the XADD, so a fast worker may already have written 'running': then nothing is
-- changed. Returns 1 when the queued state was written.
if redis.call('HSETNX', KEYS[1], 'state', 'queued') == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'queued_at', ARGV[1], 'updated_at', ARGV[1], 'job_id', ARGV[3], 'type', ARGV[4], 'entry_id', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
