-- Ferry: acknowledge entries, but only those this consumer still owns, and record each job's
-- outcome in its group's status in the same step.
--
-- KEYS[1]   the job stream  ferry:{Q}:jobs (an entry of another priority's lane is found there)
-- KEYS[2..] status hashes  ferry:{Q}:job:<job_id> of the jobs whose outcome is recorded
-- ARGV[1]   the consumer group
-- ARGV[2]   this consumer's name
-- ARGV[3]   now, in milliseconds since the epoch
-- ARGV[4]   how long a succeeded job's status stays, in milliseconds
-- ARGV[5]   how long a cancelled job's status stays, in milliseconds
-- ARGV[6]   the index prefix  ferry:{Q}:idx:
-- ARGV[7..] five values an entry: its ID, the index in KEYS of its status hash (0 for none),
--           the job id, the outcome ('succeeded', or 'cancelled' for a job cancelled on
--           request), and how long its handler ran in milliseconds (processing_ms)
-- then, optionally, 'release', the index in KEYS of the first limit-state key, and
--           release.lua's arguments: finished jobs' concurrency slots are freed after the
--           acknowledgements, in the same call (the worker's flush has one call fewer)
--
-- XACK alone acknowledges for the whole group: a worker that lost an entry's lease (a zombie
-- after a long pause) would ack the new owner's delivery, and its status would claim a success
-- the new owner has not had yet. Returns the IDs that were NOT acked because another consumer
-- owns them now (or they are no longer pending); their status is left alone. With slots to
-- release, the reply ends with an integer: how many slots went to the group's waiting jobs.
-- ferry:prelude
local lost = {}
local i = 7
while i <= #ARGV and ARGV[i] ~= 'release' do
  local id = ARGV[i]
  local record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], id)
  if record then
    redis.call('XACK', lane, ARGV[1], id)
    local status = tonumber(ARGV[i + 1])
    if status > 0 then
      local outcome = ARGV[i + 3]
      if outcome == 'succeeded' then
        set_status(KEYS[status], ARGV[6], ARGV[1], ARGV[i + 2], id, outcome, ARGV[3], ARGV[4],
          { 'progress', '100', 'finished_at', ARGV[3], 'processing_ms', ARGV[i + 4], 'retryable', '0' }, nil, 'running')
      else
        set_status(KEYS[status], ARGV[6], ARGV[1], ARGV[i + 2], id, outcome, ARGV[3], ARGV[5],
          { 'finished_at', ARGV[3], 'retryable', '0' }, nil, 'running')
      end
    end
  else
    lost[#lost + 1] = id
  end
  i = i + 5
end
if ARGV[i] == 'release' then
  lost[#lost + 1] = release_slots(tonumber(ARGV[i + 1]), i + 2)
end
return lost
