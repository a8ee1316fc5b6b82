-- Ferry: publish a batch of jobs to a queue with a maximum depth or a quota per key, all of them
-- or none.
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
-- ARGV[6..] for each job: its index in KEYS of its dedup key (0 for none), of its key's set (0
--          for none), of its ordering key's list of published jobs ferry:{Q}:ordered:<key> (0 for
--          none), its job id ('' for the entry ID), its number of field values, then its fields
--          and values
--
-- The depth is the backlog of the slowest group: entries it has not read (its lag), read and
-- not acknowledged (pending), and parked for a later delivery; the stream's length when no group
-- exists yet, or when Redis cannot tell a group's lag (after deletions inside the stream). A
-- key's unfinished jobs are the entries in its set that some group has not finished (not read,
-- pending, or parked); finished ones are dropped from the set when it is full. A duplicate of a
-- key published within the window adds nothing and takes no room. When the jobs that would be
-- added do not fit, nothing is written.
-- Returns {1, {job id, entry id or '', 1 added | 0 duplicate}...}; or {0, depth, added it asked
-- for, retry-after ms or -1 when the drain rate is not known yet}; or {0, count, added it asked
-- for, -1, key set's index in KEYS} when a key's quota refused it.
-- ferry:prelude
local groups = group_infos(KEYS[1])
-- The jobs of the batch, and which are duplicates.
local jobs, adding, per_key = {}, 0, {}
local i = 6
while i <= #ARGV do
  local dedup, key_set, ordered = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local job_id, count = ARGV[i + 3], tonumber(ARGV[i + 4])
  local first = dedup > 0 and redis.call('GET', KEYS[dedup]) or nil
  jobs[#jobs + 1] = { dedup = dedup, key_set = key_set, ordered = ordered, job_id = job_id, from = i + 5,
    to = i + 4 + count, first = first }
  if not first then
    adding = adding + 1
    if key_set > 0 then
      per_key[key_set] = (per_key[key_set] or 0) + 1
    end
  end
  i = i + 5 + count
end

if ARGV[1] ~= '' then
  local depth, slowest = 0, nil
  if #groups == 0 then
    depth = redis.call('XLEN', KEYS[1])
  end
  for index, info in ipairs(groups) do
    local lag = info['lag']
    if type(lag) ~= 'number' then
      lag = redis.call('XLEN', KEYS[1])
    end
    local parked = redis.call('ZCARD', ARGV[3] .. info['name'])
    local backlog = lag + info['pending'] + parked
    if backlog > depth or index == 1 then
      depth = backlog
      -- What the slowest group has finished so far: read, less pending and parked (a group that
      -- has read nothing has no count of entries read yet).
      local read = info['entries-read']
      if type(read) ~= 'number' and info['last-delivered-id'] == '0-0' then
        read = 0
      end
      slowest = type(read) == 'number' and read - info['pending'] - parked or nil
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
    return {0, depth, adding, retry_after}
  end
end

if ARGV[4] ~= '' then
  local most = tonumber(ARGV[4])
  -- Whether some group has yet to finish entry `id`: not read, pending, or parked for later.
  -- (An entry trimmed from the stream was finished by every group, which this finds too.)
  local function unfinished(id)
    if #groups == 0 then
      return true
    end
    for _, info in ipairs(groups) do
      if id_before(info['last-delivered-id'], id) then
        return true
      end
      if redis.call('XPENDING', KEYS[1], info['name'], id, id, 1)[1]
        or redis.call('ZSCORE', ARGV[3] .. info['name'], id) then
        return true
      end
    end
    return false
  end
  for key_set, asked in pairs(per_key) do
    local count = redis.call('ZCARD', KEYS[key_set])
    if count + asked > most then
      for _, id in ipairs(redis.call('ZRANGE', KEYS[key_set], 0, -1)) do
        if not unfinished(id) then
          redis.call('ZREM', KEYS[key_set], id)
          count = count - 1
        end
      end
      if count + asked > most then
        return {0, count, asked, -1, key_set}
      end
    end
  end
end

local replies = {}
for _, job in ipairs(jobs) do
  -- A key given twice in one batch: its second job finds the first's.
  local first = job.first or (job.dedup > 0 and redis.call('GET', KEYS[job.dedup])) or nil
  if first then
    replies[#replies + 1] = { first, '', 0 }
  else
    local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, job.from, job.to))
    local job_id = job.job_id ~= '' and job.job_id or entry_id
    if job.dedup > 0 then
      redis.call('SET', KEYS[job.dedup], job_id, 'PX', ARGV[2])
    end
    if job.ordered > 0 then
      register_ordered(KEYS[1], KEYS[job.ordered], entry_id, ARGV[3])
    end
    if job.key_set > 0 and ARGV[4] ~= '' then
      redis.call('ZADD', KEYS[job.key_set], tonumber(string.match(entry_id, '^(%d+)')), entry_id)
      redis.call('PEXPIRE', KEYS[job.key_set], ARGV[5])
    end
    replies[#replies + 1] = { job_id, entry_id, 1 }
  end
end
return {1, replies}
