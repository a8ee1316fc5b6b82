-- Ferry: acknowledge entries, but only those this consumer still owns, and record each job's
-- outcome in its group's status in the same step.
--
-- KEYS[1]   the job stream  ferry:{Q}:jobs (an entry of another priority's lane is found there)
-- KEYS[2..] status hashes  ferry:{Q}:job:<job_id> of the jobs whose outcome is recorded in one
--           (a packed success, below, passes none)
-- ARGV[1]   the consumer group
-- ARGV[2]   this consumer's name
-- ARGV[3]   now, in milliseconds since the epoch
-- ARGV[4]   how long a succeeded job's status stays, in milliseconds
-- ARGV[5]   how long a cancelled job's status stays, in milliseconds
-- ARGV[6]   the index prefix  ferry:{Q}:idx:
-- ARGV[7]   the lowest entry ID below, ARGV[8] the highest: one ownership check covers them
-- ARGV[9]   how many entries follow
-- ARGV[10..] each entry: its ID, then k, and by k's sign one of three forms. 0 (status off):
--           nothing more. -1: a first run's success of a job whose id is its entry ID, without
--           a flow-control key, its running record not written (it waited in the worker's flush
--           with this outcome), by a consumer whose name has no `|`: one value more, its packed
--           status `succeeded|<finished_at>|<started_at>|1|<processing_ms>|<consumer>|<type>`,
--           kept in its minute's hash (pack_succeeded) unless the queue's events are on; its
--           status hash, needed only then, is not passed but named here (a key in KEYS costs
--           Redis's thread about 0.5 µs a job, measured on this call, where the common case
--           needs none). k > 0, the index in KEYS of its status hash: seven values more, the job
--           id, the outcome ('succeeded', or 'cancelled' for a job cancelled on request), how
--           long its handler ran in milliseconds (processing_ms); then, when the job's running
--           record was not written (it is written here in the same HSET), when it started
--           (ms), its type, its delivery attempt and its flow-control key ('' for none); else
--           four ''. (Each argument costs Redis's thread about 0.1 µs: the common success takes
--           three, not nine, and no Lua building its packed value.)
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
local group, consumer, now, index = ARGV[1], ARGV[2], ARGV[3], ARGV[6]

-- Writes a job's outcome to its status hash `key`; with a `started_at` (not ''), also the running
-- record start_batch.lua would have written.
local function record_outcome(key, job_id, id, outcome, processing_ms, started_at, attempt, job_type, job_key)
  local fields
  if outcome == 'succeeded' then
    fields = { 'progress', '100', 'finished_at', now, 'processing_ms', processing_ms, 'retryable', '0' }
  else
    fields = { 'finished_at', now, 'retryable', '0' }
  end
  local keep = outcome == 'succeeded' and ARGV[4] or ARGV[5]
  if started_at == '' then
    -- A success follows this worker's running record. A cancel may come before any (a job
    -- cancelled before it started): its state is read, and its ids written with it.
    set_status(key, index, group, job_id, id, outcome, now, keep, fields, nil, outcome == 'succeeded' and 'running' or nil)
    return
  end
  local started, from = running_fields(attempt, consumer, started_at)
  if events_enabled(index) then
    -- Two writes, so the event stream shows the start and then the outcome.
    set_status(key, index, group, job_id, id, 'running', started_at, 0, started, job_fields(job_type, job_key), from)
    set_status(key, index, group, job_id, id, outcome, now, keep, fields, nil, 'running')
  else
    -- One write for both.
    for k = 1, #started do
      fields[#fields + 1] = started[k]
    end
    set_status(key, index, group, job_id, id, outcome, now, keep, fields, job_fields(job_type, job_key), from)
  end
end

local i = 10
local in_range = owned_in_range(KEYS[1], group, consumer, ARGV[7], ARGV[8], tonumber(ARGV[9]))
while i <= #ARGV and ARGV[i] ~= 'release' do
  local id = ARGV[i]
  local status = tonumber(ARGV[i + 1])
  local record, lane = in_range[id], KEYS[1]
  if not record then
    record, lane = owned_lane(KEYS[1], group, consumer, id)
  end
  -- An entry named twice is acknowledged once, as when each XACK was sent at once.
  if record and not acked[id] then
    acked[id] = true
    local ids = list_named(acks, lanes, lane)
    ids[#ids + 1] = id
    if status < 0 then
      if not events_enabled(index) then
        pack_succeeded(index, group, id, ARGV[i + 2])
      else
        -- The event stream needs the start and the outcome as two steps of a status hash.
        local started_at, processing_ms, job_type =
          string.match(ARGV[i + 2], '^succeeded|[^|]*|([^|]*)|1|([^|]*)|[^|]*|(.*)$')
        record_outcome(joined(queue_prefix(index), 'job:') .. id, id, id, 'succeeded', processing_ms, started_at, '1',
          job_type, '')
      end
    elseif status > 0 then
      record_outcome(KEYS[status], ARGV[i + 2], id, ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 7], ARGV[i + 6],
        ARGV[i + 8])
    end
  else
    lost[#lost + 1] = id
  end
  i = i + (status < 0 and 3 or status > 0 and 9 or 2)
end
for _, lane in ipairs(lanes) do
  call_in_parts('XACK', lane, group, acks[lane])
end
flush_index()
flush_packed(now, ARGV[4])
-- After the acknowledgements: passing an ordering key's turn asks whether its job is pending.
if ARGV[i] == 'release' then
  lost[#lost + 1] = release_slots(tonumber(ARGV[i + 1]), i + 2)
end
return lost
