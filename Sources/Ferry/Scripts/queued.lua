-- Ferry: record just-published jobs as queued, one call for a whole published batch.
--
-- KEYS[1]   the queue's event stream  ferry:{Q}:events
-- KEYS[2..] the status hashes  ferry:{Q}:job:<job_id>  of the jobs that get a queued record
-- ARGV[1]   now, in milliseconds since the epoch
-- ARGV[2]   how long a status lives if no worker ever runs the job, in milliseconds
-- ARGV[3..] three values a job with a record, in the order of KEYS[2..]: its job id, its type,
--           its stream entry ID; then the job ids of the jobs without one
--
-- A job whose id is its stream entry ID gets no record: its entry says all a queued record
-- would (type, time, id), and `ferry job status` finds it there (JobLocator), so its status
-- hash is first written when a group starts it; that saves two commands of Redis time a job.
-- A job with an id of its own gets one, so it can be found by that id before it runs.
-- Writes each recorded job's own fields; a group that has not started the job has no state of
-- its own in the hash, which reads as 'queued'. Runs after the XADD, so a fast worker may
-- already have written its group's 'running': then only the job's own fields are added and the
-- hash's expiry is left as the worker set it. Each new job, with a record or not, is also an
-- event `queued` (no group) in the queue's event stream when it exists (record_event in the
-- prelude). Returns how many records were new.
local events_on = redis.call('EXISTS', KEYS[1]) == 1
local function queued_event(job_id)
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', 10000, '*', 'job_id', job_id, 'group', '', 'state', 'queued', 'from', '',
    'at', ARGV[1])
end
local new = 0
for i = 2, #KEYS do
  local at = 3 + (i - 2) * 3
  -- Four new fields: the hash did not exist (a worker's running record writes three of them).
  -- HSET's reply answers that, without an EXISTS per job.
  if redis.call('HSET', KEYS[i], 'queued_at', ARGV[1], 'job_id', ARGV[at], 'type', ARGV[at + 1], 'entry_id', ARGV[at + 2]) == 4 then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    new = new + 1
    if events_on then
      queued_event(ARGV[at])
    end
  end
end
if events_on then
  for i = 3 + (#KEYS - 1) * 3, #ARGV do
    queued_event(ARGV[i])
  end
end
return new
