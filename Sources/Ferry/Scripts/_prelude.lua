-- Ferry's shared script parts: the EmbedLuaScripts plugin puts this text where a script has the
-- line `-- ferry:prelude`, so the ownership check and Redis's clock are written once. Files
-- whose names start with `_` are parts, not scripts of their own.

-- The pending-list record of `id` in `group` when `consumer` owns it, else nil: the check
-- every transition of a delivered job makes first, so a worker that lost an entry (a zombie
-- after a long pause, a reclaim) cannot act for its new owner. The record is
-- {id, consumer, idle ms, deliveries}.
local function owned(stream, group, consumer, id)
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    return pending[1]
  end
  return nil
end

-- Redis's clock in milliseconds since the epoch: the one clock every worker shares.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- The states after which a job is done with in its group (JobState.isTerminal in Swift).
local terminal = { succeeded = true, dead = true, cancelled = true, deleted = true }

-- Writes one group's status of a job (data format 2) and moves the job in that group's index,
-- the one write every transition makes, so the status can never disagree with the entry:
--   key      the job's status hash        ferry:{Q}:job:<job_id>
--   index    the queue's index prefix     ferry:{Q}:idx:  (sets <index><group>:<state>, the
--            job id scored by when it entered the state; no set for 'queued', whose count is
--            the group's lag)
--   group, job_id, state (a JobState), now (ms)
--   keep     for a terminal state, how long the status and its index entry stay (ms)
--   fields   name, value pairs of the group's other fields (written as `<group>.<name>`)
--   shared   name, value pairs of the job's own fields (`type`, `entry_id`), or nil
-- A non-terminal state keeps the hash (PERSIST); a terminal one sets its expiry, never
-- shortening another group's (GT). Index keys are built here, not passed: they share the
-- queue's {Q} hash tag, so they live in the same cluster slot as every key of the script.
-- Returns the group's state before this write, or false.
local function set_status(key, index, group, job_id, state, now, keep, fields, shared)
  local prefix = group .. '.'
  local previous = redis.call('HGET', key, prefix .. 'state')
  local values = { prefix .. 'state', state, prefix .. 'updated_at', now, 'job_id', job_id, 'updated_at', now }
  for i = 1, #fields, 2 do
    values[#values + 1] = prefix .. fields[i]
    values[#values + 1] = fields[i + 1]
  end
  if shared then
    for i = 1, #shared do values[#values + 1] = shared[i] end
  end
  redis.call('HSET', key, unpack(values))
  local sets = index .. group .. ':'
  if previous and previous ~= state and previous ~= 'queued' then
    redis.call('ZREM', sets .. previous, job_id)
  end
  if state ~= 'queued' then
    redis.call('ZADD', sets .. state, now, job_id)
  end
  if terminal[state] then
    local ttl = redis.call('PTTL', key)
    if ttl == -1 then
      redis.call('PEXPIRE', key, keep)
    else
      redis.call('PEXPIRE', key, keep, 'GT')
    end
    -- The set keeps what its statuses keep: each write drops the members older than that (in
    -- a steady stream, the one or two that aged out since the last write), and an idle set
    -- expires whole.
    redis.call('ZREMRANGEBYSCORE', sets .. state, '-inf', '(' .. (tonumber(now) - tonumber(keep)))
    redis.call('PEXPIRE', sets .. state, keep)
  else
    redis.call('PERSIST', key)
  end
  return previous
end
