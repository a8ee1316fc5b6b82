-- Ferry: acknowledge entries, but only those this consumer still owns, and record each job's
-- outcome in its group's status in the same step.
--
-- KEYS[1]   the job stream  ferry:{Q}:jobs (an entry of another priority's lane is found there)
-- KEYS[2..] status hashes  ferry:{Q}:job:<job_id> of the jobs whose outcome is recorded
-- ARGV[1]   the consumer group
-- ARGV[2]   this consumer's name
-- ARGV[3]   now, in milliseconds since the epoch
-- ARGV[4]   how long a succeeded job's status stays, in milliseconds (a first run's success of
--           a job whose id is its entry ID is packed in its minute's hash: pack_succeeded)
-- ARGV[5]   how long a cancelled job's status stays, in milliseconds
-- ARGV[6]   the index prefix  ferry:{Q}:idx:
-- ARGV[7]   the lowest entry ID below, ARGV[8] the highest: one ownership check covers them
-- ARGV[9]   how many entries follow
-- ARGV[10..] each entry: its ID and the index in KEYS of its status hash; 0 for none (status
--           off) ends the entry there. An entry with a status has six values more: the job id,
--           the outcome ('succeeded', or 'cancelled' for a job cancelled on request), how long
--           its handler ran in milliseconds (processing_ms); then, when the job's running
--           record was not written (it waited in the worker's flush with this outcome, so it is
--           written here in the same HSET), when it started (ms), its type, its delivery
--           attempt and its flow-control key ('' for none); else four ''. (Two values, not nine,
--           for a job without a status: each argument costs Redis's thread about 0.08 µs, and a
--           status-off job needs none.)
-- then, optionally, 'release', the index in KEYS of the first limit-state key, and
--           release.lua's arguments: finished jobs' concurrency slots are freed after the
--           acknowledgements, in the same call (the worker's flush has one call fewer)
--
-- XACK alone acknowledges for the whole group: a worker that lost an entry's lease (a zombie
-- after a long pause) would ack the new owner's delivery, and its status would claim a success
-- the new owner has not had yet. Returns the IDs that were NOT acked because another consumer
-- owns them now (or they are no longer pending); their status is left alone. With slots to
-- release, the reply ends with an integer: how many slots went to the group's waiting jobs.
-- ferry:function-flags allow-oom
-- ferry:prelude
local lost = {}
-- One XACK per lane and one ZADD / ZREM per index set for the whole flush (see gather_index).
local acks, lanes, acked = {}, {}, {}
gather_index()
local i = 10
local in_range = owned_in_range(KEYS[1], ARGV[1], ARGV[2], ARGV[7], ARGV[8], tonumber(ARGV[9]))
local consumer_packable = packable(ARGV[2])
while i <= #ARGV and ARGV[i] ~= 'release' do
  local id = ARGV[i]
  local status = tonumber(ARGV[i + 1])
  local record, lane = in_range[id], KEYS[1]
  if not record then
    record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], id)
  end
  -- An entry named twice is acknowledged once, as when each XACK was sent at once.
  if record and not acked[id] then
    acked[id] = true
    local ids = list_named(acks, lanes, lane)
    ids[#ids + 1] = id
    local outcome = status > 0 and ARGV[i + 3]
    if outcome == 'succeeded' and ARGV[i + 7] == '1' and ARGV[i + 5] ~= '' and ARGV[i + 2] == id and ARGV[i + 8] == ''
        and consumer_packable and not events_enabled(ARGV[6]) then
      -- A first run's success of a job whose id is its entry ID, its running record not written
      -- (it waited in the flush): packed in its minute's hash. Checked first, as most successes
      -- are this, and it needs none of the tables a status hash's write builds.
      pack_succeeded(ARGV[6], ARGV[1], id, ARGV[3], ARGV[i + 5], ARGV[i + 7], ARGV[i + 4], ARGV[2], ARGV[i + 6])
    elseif status > 0 then
      local fields
      if outcome == 'succeeded' then
        fields = { 'progress', '100', 'finished_at', ARGV[3], 'processing_ms', ARGV[i + 4], 'retryable', '0' }
      else
        fields = { 'finished_at', ARGV[3], 'retryable', '0' }
      end
      local keep = outcome == 'succeeded' and ARGV[4] or ARGV[5]
      local started_at = ARGV[i + 5]
      if started_at == '' then
        -- A success follows this worker's running record. A cancel may come before any (a job
        -- cancelled before it started): its state is read, and its ids written with it.
        set_status(KEYS[status], ARGV[6], ARGV[1], ARGV[i + 2], id, outcome, ARGV[3], keep, fields, nil,
          outcome == 'succeeded' and 'running' or nil)
      else
        -- The running record start_batch.lua would have written.
        local started, from = running_fields(ARGV[i + 7], ARGV[2], started_at)
        if events_enabled(ARGV[6]) then
          -- Two writes, so the event stream shows the start and then the outcome.
          set_status(KEYS[status], ARGV[6], ARGV[1], ARGV[i + 2], id, 'running', started_at, 0, started,
            job_fields(ARGV[i + 6], ARGV[i + 8]), from)
          set_status(KEYS[status], ARGV[6], ARGV[1], ARGV[i + 2], id, outcome, ARGV[3], keep, fields, nil, 'running')
        else
          -- One write for both.
          for k = 1, #started do
            fields[#fields + 1] = started[k]
          end
          set_status(KEYS[status], ARGV[6], ARGV[1], ARGV[i + 2], id, outcome, ARGV[3], keep, fields,
            job_fields(ARGV[i + 6], ARGV[i + 8]), from)
        end
      end
    end
  else
    lost[#lost + 1] = id
  end
  i = i + (status > 0 and 9 or 2)
end
for _, lane in ipairs(lanes) do
  call_in_parts('XACK', lane, ARGV[1], acks[lane])
end
flush_index()
flush_packed(ARGV[3], ARGV[4])
-- After the acknowledgements: passing an ordering key's turn asks whether its job is pending.
if ARGV[i] == 'release' then
  lost[#lost + 1] = release_slots(tonumber(ARGV[i + 1]), i + 2)
end
return lost
