-- Ferry: publish a batch of jobs, all of them or none, each with its queued record in the same
-- step: what the publisher sends for a queue with a maximum depth or a quota per key, for jobs
-- with ids of their own (their status hash is their queued record), and while the queue's events
-- are on (each publish is a `queued` event, before any worker can start the job). Jobs that need
-- none of this go as plain XADDs (Publisher), which cost Redis a fifth of this script's time.
--
-- KEYS[1]  the job stream      ferry:{Q}:jobs
-- KEYS[2]  the drain sample    ferry:{Q}:drain (hash: at, finished), for a retry-after hint
-- KEYS[3..] the publish dedup keys ferry:{Q}:idem:pub:<key> of the jobs that have one, and the
--          unfinished-jobs sets ferry:{Q}:keyjobs:<key> of the keys the quota counts
-- ARGV[1]  the queue's maximum depth ('' for none)
-- ARGV[2]  the dedup window in milliseconds
-- ARGV[3]  the prefix of the groups' later deliveries  ferry:{Q}:delayed:
-- ARGV[4]  the most unfinished jobs per key ('' for none)
-- ARGV[5]  how long a key's set outlives its last publish, ms
-- ARGV[6]  how long a queued record lives if no worker ever runs the job, ms ('' to write no
--          records and no `queued` events: status off)
-- ARGV[7]  now, ms since the epoch (the records' queued_at and the events' time)
-- ARGV[8..] for each job: its index in KEYS of its dedup key (0 for none), of its key's set (0
--          for none), of its ordering key's list of published jobs ferry:{Q}:ordered:<key> (0 for
--          none), of its status hash ferry:{Q}:job:<job_id> (0 for none: a job whose id will be
--          its entry ID, whose entry is its record), its job id ('' for the entry ID), its number
--          of field values, then its fields and values
--
-- The depth is the backlog of the slowest group: entries it has not read (its lag), read and
-- not acknowledged (pending), and parked for a later delivery, over every priority lane; the
-- lanes' length when no group exists yet, or a lane's when Redis cannot tell a group's lag there
-- (after deletions inside the stream). A
-- key's unfinished jobs are the entries in its set that some group has not finished (not read,
-- pending, or parked); finished ones are dropped from the set when it is full. A duplicate of a
-- key published within the window adds nothing and takes no room. When the jobs that would be
-- added do not fit, nothing is written.
-- Returns {1, {job id, entry id or '', 1 added | 0 duplicate}...}; or {0, depth, added it asked
-- for, retry-after ms or -1 when the drain rate is not known yet}; or {0, count, added it asked
-- for, -1, key set's index in KEYS} when a key's quota refused it. A refusal is recorded in the
-- queue's event stream while events are on: a `refused` event (no group) per job it turned away,
-- with its job id ('' for one that would have been named by its entry) and `reason` queue_full or
-- key_quota, so a submission's history shows it arrived and why it did not become a job.
-- ferry:prelude
-- The jobs of the batch, and which are duplicates.
local jobs, adding, per_key = {}, 0, {}
local i = 8
while i <= #ARGV do
  local dedup, key_set, ordered = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local status, job_id, count = tonumber(ARGV[i + 3]), ARGV[i + 4], tonumber(ARGV[i + 5])
  local first = dedup > 0 and redis.call('GET', KEYS[dedup]) or nil
  jobs[#jobs + 1] = { dedup = dedup, key_set = key_set, ordered = ordered, status = status, job_id = job_id,
    from = i + 6, to = i + 5 + count, first = first }
  if not first then
    adding = adding + 1
    if key_set > 0 then
      per_key[key_set] = (per_key[key_set] or 0) + 1
    end
  end
  i = i + 6 + count
end
local index = string.sub(KEYS[1], 1, -5) .. 'idx:'  -- ferry:{Q}:jobs -> ferry:{Q}:idx:, as events_enabled reads it

local function refused(reason)
  local now
  for _, job in ipairs(jobs) do
    if not job.first then
      now = now or now_ms()
      record_event(index, '', job.job_id, 'refused', nil, now, reason)
    end
  end
end

if ARGV[1] ~= '' then
  -- Each group's lag, pending and entries read, summed over the queue's lanes (a lane a group
  -- does not read yet is all lag to it).
  local groups, by_name, lanes = {}, {}, {}
  for _, lane in ipairs(lane_streams(KEYS[1])) do
    local seen = {}
    lanes[#lanes + 1] = { length = redis.call('XLEN', lane), seen = seen }
    for _, info in ipairs(group_infos(lane)) do
      local group = by_name[info['name']]
      if not group then
        group = { name = info['name'], lag = 0, pending = 0, read = 0 }
        by_name[info['name']] = group
        groups[#groups + 1] = group
      end
      seen[info['name']] = true
      local lag, read = info['lag'], info['entries-read']
      group.lag = group.lag + (type(lag) == 'number' and lag or lanes[#lanes].length)
      group.pending = group.pending + info['pending']
      if type(read) ~= 'number' and info['last-delivered-id'] == '0-0' then
        read = 0
      end
      group.read = (type(read) == 'number' and group.read) and group.read + read or nil
    end
  end
  local depth, slowest = 0, nil
  for _, lane in ipairs(lanes) do
    if #groups == 0 then
      depth = depth + lane.length
    end
    for _, group in ipairs(groups) do
      if not lane.seen[group.name] then
        group.lag = group.lag + lane.length
      end
    end
  end
  for index, group in ipairs(groups) do
    local parked = redis.call('ZCARD', ARGV[3] .. group.name)
    local backlog = group.lag + group.pending + parked
    if backlog > depth or index == 1 then
      depth = backlog
      -- What the slowest group has finished so far: read, less pending and parked (a group that
      -- has read nothing has no count of entries read yet).
      slowest = group.read and group.read - group.pending - parked or nil
    end
  end
  local most = tonumber(ARGV[1])
  if depth + adding > most then
    -- A hint from the drain rate: the slowest group's finished count against a sample of it
    -- taken at an earlier refusal (kept up to a minute, then taken again).
    local retry_after = -1
    if slowest then
      local now = now_ms()
      local sample = redis.call('HMGET', KEYS[2], 'at', 'finished')
      local at, finished = tonumber(sample[1]), tonumber(sample[2])
      if at and now - at >= 1000 and slowest > finished then
        retry_after = math.ceil((depth + adding - most) * (now - at) / (slowest - finished))
      end
      if not at or now - at > 60000 or slowest < finished then
        redis.call('HSET', KEYS[2], 'at', now, 'finished', slowest)
        redis.call('PEXPIRE', KEYS[2], 300000)
      end
    end
    refused('queue_full')
    return {0, depth, adding, retry_after}
  end
end

if ARGV[4] ~= '' then
  local most = tonumber(ARGV[4])
  for key_set, asked in pairs(per_key) do
    local count = redis.call('ZCARD', KEYS[key_set])
    if count + asked > most then
      for _, id in ipairs(redis.call('ZRANGE', KEYS[key_set], 0, -1)) do
        local entry, level = string.match(id, '^([%d-]+):p(%d)$')
        if not entry_unfinished(entry and KEYS[1] .. ':p' .. level or KEYS[1], entry or id, ARGV[3]) then
          redis.call('ZREM', KEYS[key_set], id)
          count = count - 1
        end
      end
      if count + asked > most then
        refused('key_quota')
        return {0, count, asked, -1, key_set}
      end
    end
  end
end

-- The job's queued record: its own fields in its status hash (the type and the flow-control key
-- read from its fields: the API shows a caller scoped to its key only its own jobs), and the
-- `queued` event. A hash left by an earlier job with the same id keeps its fields and its
-- expiry, lengthened to a queued record's if shorter.
local function queued(job, job_id, entry_id)
  if job.status > 0 then
    local job_type, job_key = two_fields(ARGV, job.from, job.to, 'type', 'key')
    local status = KEYS[job.status]
    local added = redis.call('HSET', status, 'queued_at', ARGV[7], 'job_id', job_id, 'type', job_type or '',
      'entry_id', entry_id) == 4
    if job_key then
      redis.call('HSET', status, 'key', job_key)
    end
    if added then
      redis.call('PEXPIRE', status, ARGV[6])
    else
      redis.call('PEXPIRE', status, ARGV[6], 'GT')
    end
  end
  record_event(index, '', job_id, 'queued', nil, ARGV[7])
end

local replies = {}
for _, job in ipairs(jobs) do
  -- A key given twice in one batch: its second job finds the first's.
  local first = job.first or (job.dedup > 0 and redis.call('GET', KEYS[job.dedup])) or nil
  if first then
    replies[#replies + 1] = { first, '', 0 }
  else
    local entry_id, lane = add_job(KEYS[1], ARGV, job.from, job.to)
    local job_id = job.job_id ~= '' and job.job_id or entry_id
    if job.dedup > 0 then
      redis.call('SET', KEYS[job.dedup], job_id, 'PX', ARGV[2])
    end
    if job.ordered > 0 then
      register_ordered(KEYS[1], KEYS[job.ordered], entry_id, ARGV[3])
    end
    if job.key_set > 0 and ARGV[4] ~= '' then
      -- Another lane's entry is listed with its lane (`<entry ID>:p<level>`).
      local member = lane == KEYS[1] and entry_id or entry_id .. string.sub(lane, #KEYS[1] + 1)
      redis.call('ZADD', KEYS[job.key_set], tonumber(string.match(entry_id, '^(%d+)')), member)
      redis.call('PEXPIRE', KEYS[job.key_set], ARGV[5])
    end
    if ARGV[6] ~= '' then
      queued(job, job_id, entry_id)
    end
    replies[#replies + 1] = { job_id, entry_id, 1 }
  end
end
return {1, replies}
