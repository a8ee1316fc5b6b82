-- Ferry: record just-published jobs as queued, one call for a whole published batch.
--
-- KEYS      the jobs' status hashes  ferry:{Q}:job:<job_id>
-- ARGV[1]   now, in milliseconds since the epoch
-- ARGV[2]   how long a status lives if no worker ever runs the job, in milliseconds
-- ARGV[3..] three values a job, in the order of KEYS: its job id, its type, its stream entry ID
--
-- Writes each job's own fields; a group that has not started the job has no state of its own
-- in the hash, which reads as 'queued'. Runs after the XADD, so a fast worker may already have
-- written its group's 'running': then only the job's own fields are added and the hash's expiry
-- is left as the worker set it. Each new job is also an event `queued` (no group) in the queue's
-- event stream ferry:{Q}:events when it exists (record_event in the prelude). Returns how many
-- hashes were new.
local events = #KEYS > 0 and string.match(KEYS[1], '^(.*}):job:') .. ':events'
local events_on = events and redis.call('EXISTS', events) == 1
local new = 0
for i = 1, #KEYS do
  local at = 3 + (i - 1) * 3
  -- Four new fields: the hash did not exist (a worker's running record writes three of them).
  -- HSET's reply answers that, without an EXISTS per job.
  if redis.call('HSET', KEYS[i], 'queued_at', ARGV[1], 'job_id', ARGV[at], 'type', ARGV[at + 1], 'entry_id', ARGV[at + 2]) == 4 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    new = new + 1
    if events_on then
      redis.call('XADD', events, 'MAXLEN', '~', 10000, '*', 'job_id', ARGV[at], 'group', '', 'state', 'queued',
        'from', '', 'at', ARGV[1])
    end
  end
end
return new
