-- Ferry: a worker is about to start a batch of delivered jobs.
--
-- KEYS[1]   the cancel requests  ferry:{Q}:cancel_requests (sorted set: job id -> expiry, ms)
-- KEYS[2..] the status hashes of the jobs to record as running, ferry:{Q}:job:<job_id>, in the
--           order of the running records below (none when the worker keeps no status)
-- ARGV[1]   now, in milliseconds since the epoch
-- ARGV[2]   this consumer's name
-- ARGV[3]   the consumer group
-- ARGV[4]   the index prefix  ferry:{Q}:idx:
-- ARGV[5]   n, how many job ids follow to check for cancellation
-- ARGV[6 .. 5+n]  those job ids
-- then, for each status hash in KEYS[2..], five values: job id, type, entry ID, delivery attempt,
--           flow-control key ('' for none)
--
-- One round trip per read batch instead of one or two per job: records every job as running
-- but those someone asked to cancel (`ferry job cancel`). Returns {the job ids asked to cancel,
-- the job ids whose running record was refused (their status had already moved on for this
-- entry: see set_status)}.
-- ferry:function-flags allow-oom
-- ferry:prelude
local cancelled, asked, refused = {}, {}, {}
local n = tonumber(ARGV[5])
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 6, 5 + n do
    if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
      cancelled[#cancelled + 1] = ARGV[i]
      asked[ARGV[i]] = true
    end
  end
end
local base = 6 + n
gather_index()
for k = 2, #KEYS do
  local at = base + (k - 2) * 5
  local job_id = ARGV[at]
  if not asked[job_id] then
    local fields, from = running_fields(ARGV[at + 3], ARGV[2], ARGV[1])
    local _, was_refused = set_status(KEYS[k], ARGV[4], ARGV[3], job_id, ARGV[at + 2], 'running', ARGV[1], 0, fields,
      job_fields(ARGV[at + 1], ARGV[at + 4]), from)
    if was_refused then
      refused[#refused + 1] = job_id
    end
  end
end
flush_index()
return { cancelled, refused }
