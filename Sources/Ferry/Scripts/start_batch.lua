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
-- then, for each status hash in KEYS[2..], four values: job id, type, entry ID, delivery attempt
--
-- One round trip per read batch instead of one or two per job: returns the job ids someone
-- asked to cancel (`ferry job cancel`), and records every other job as running.
-- ferry:prelude
local cancelled, asked = {}, {}
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
for k = 2, #KEYS do
  local at = base + (k - 2) * 4
  local job_id = ARGV[at]
  if not asked[job_id] then
    set_status(KEYS[k], ARGV[4], ARGV[3], job_id, ARGV[at + 2], 'running', ARGV[1], 0,
      { 'attempts', ARGV[at + 3], 'consumer', ARGV[2], 'started_at', ARGV[1], 'next_attempt_at', '' },
      { 'type', ARGV[at + 1] }, ARGV[at + 3] == '1' and 'none' or nil)
  end
end
return cancelled
