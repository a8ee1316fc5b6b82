-- Ferry's schedule script for producers in any language: a copy of Sources/Ferry/Scripts/schedule.lua
-- with the shared prelude (_prelude.lua) put in its place, exactly as the workers' Ferry
-- embeds it (a test keeps the two equal). Load it with SCRIPT LOAD and call EVALSHA, or run it
-- with redis-cli --eval; docs/wire-format.md, "Scheduled jobs", shows the call.
-- Ferry: publish a job to be delivered later (a delayed or scheduled job), atomically.
--
-- KEYS[1]  the due index          ferry:{Q}:scheduled (sorted set: <id> -> due time, ms)
-- KEYS[2]  the job's fields       ferry:{Q}:scheduled:<id> (hash, until it is due)
-- then     the job's status hash  ferry:{Q}:job:<id>, when ARGV[6] is '1' (status kept)
-- then     the publish dedup key  ferry:{Q}:idem:pub:<key>, when ARGV[7] is '1'
-- ARGV[1]  the due time: ms since the epoch, or '+<ms>' for that long after now (Redis's clock)
-- ARGV[2]  the job id (<id> in the keys is its key form)
-- ARGV[3]  the dedup window in milliseconds
-- ARGV[4]  how long the fields and status outlive the due time if no worker moves the job, ms
-- ARGV[5]  the job type, for the status
-- ARGV[6]  '1' when the status hash is given
-- ARGV[7]  '1' when the dedup key is given (the job has an idempotency key)
-- ARGV[8..] the entry's fields and values, as for XADD
--
-- The due time is Redis's: a client clock never decides when a job runs. Returns {1, job id,
-- due time} when scheduled, or {0, first job id} when the idempotency key was already published
-- within the window, or the job id is scheduled already and not yet due (nothing is written
-- then). A worker moves the job into the stream when it
-- is due (move_due.lua).
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

-- The moves a group's state may make (JobState.successors in Swift; a test keeps them equal).
local unfinished = { running = true, succeeded = true, dead = true, cancelled = true, deleted = true }
local successors = {
  retrying = unfinished, failed = unfinished,
  queued = { scheduled = true, running = true, succeeded = true, dead = true, cancelled = true, deleted = true },
  scheduled = { queued = true, running = true, succeeded = true, dead = true, cancelled = true, deleted = true },
  running = { running = true, retrying = true, failed = true, succeeded = true, dead = true, cancelled = true,
    deleted = true },
  dead = { queued = true }, succeeded = {}, cancelled = {}, deleted = {},
}

-- Writes one group's status of a job (data format 2) and moves the job in that group's index,
-- the one write every transition makes, so the status can never disagree with the entry:
--   key      the job's status hash        ferry:{Q}:job:<id>
--   index    the queue's index prefix     ferry:{Q}:idx:  (sets <index><group>:<state>; no set
--            for 'queued', whose count is the group's lag)
--   group, job_id
--   entry_id the job's stream entry ID, kept as its `entry_id`: its time is the job's score in
--            the index
--   state (a JobState), now (ms)
--   keep     for a terminal state, how long the status stays (ms)
--   fields   name, value pairs of the group's other fields (written as `<group>.<name>`)
--   shared   name, value pairs of the job's own fields (`type`), or nil
--   from     the group's state before, when the caller knows it ('running' for the outcome of
--            a job this worker started; 'none' for a first delivery), saving a read; nil to read it
-- An index member is the <id> of the status key (the job id, or its hashed form), scored by
-- when the job was published, so a job keeps its place while its state changes and a listing
-- pages through every job once; members whose status expired are removed, and idle sets of
-- finished jobs expired, by the workers' retention pass (trim_index.lua). A non-terminal state keeps the hash (PERSIST); a terminal one
-- sets its expiry, never shortening another group's (GT). Index keys are built here, not
-- passed: they share the queue's {Q} hash tag, so they live in the cluster slot of every key
-- of the script. A move the table above does not allow, for the same entry, is refused and
-- nothing is written (a stale write arriving after the job's outcome; a job id used again by a
-- new entry starts afresh). Returns the group's state before this write (false for none), and
-- true when the write was refused.
-- Names built once per script call and reused for every job in it (a batch's acknowledgements
-- share their group): Lua makes a new string for every concatenation.
local names = {}
local function joined(first, second)
  local by_first = names[first]
  if not by_first then
    by_first = {}
    names[first] = by_first
  end
  local name = by_first[second]
  if not name then
    name = first .. second
    by_first[second] = name
  end
  return name
end

local function set_status(key, index, group, job_id, entry_id, state, now, keep, fields, shared, from)
  local prefix = joined(group, '.')
  local previous = from
  if not previous then
    local current = redis.call('HMGET', key, joined(prefix, 'state'), 'entry_id')
    previous = current[1]
    if previous and current[2] == entry_id and successors[previous] and not successors[previous][state] then
      return previous, true
    end
  elseif previous == 'none' then
    previous = false
  end
  local values = { joined(prefix, 'state'), state, joined(prefix, 'updated_at'), now }
  if from ~= 'running' then
    -- A job's own fields; a write after its start finds them there already.
    values[#values + 1] = 'job_id'
    values[#values + 1] = job_id
    values[#values + 1] = 'entry_id'
    values[#values + 1] = entry_id
  end
  for i = 1, #fields, 2 do
    values[#values + 1] = joined(prefix, fields[i])
    values[#values + 1] = fields[i + 1]
  end
  if shared then
    for i = 1, #shared do values[#values + 1] = shared[i] end
  end
  redis.call('HSET', key, unpack(values))
  local sets = joined(joined(index, group), ':')
  local member = string.match(key, '}:job:(.*)$')
  if previous and previous ~= state and previous ~= 'queued' then
    redis.call('ZREM', joined(sets, previous), member)
  end
  if state ~= 'queued' then
    redis.call('ZADD', joined(sets, state), tonumber(string.match(entry_id, '^(%d+)')), member)
  end
  if terminal[state] then
    -- NX: the first group to finish sets the expiry; GT: a later one only lengthens it.
    if redis.call('PEXPIRE', key, keep, 'NX') == 0 then
      redis.call('PEXPIRE', key, keep, 'GT')
    end
  else
    redis.call('PERSIST', key)
  end
  return previous
end
local status_key, dedup_key = nil, nil
local next_key = 3
if ARGV[6] == '1' then
  status_key = KEYS[next_key]
  next_key = next_key + 1
end
if ARGV[7] == '1' then
  dedup_key = KEYS[next_key]
end
if dedup_key then
  local first = redis.call('GET', dedup_key)
  if first then
    return {0, first}
  end
end
local now = now_ms()
local due
if string.sub(ARGV[1], 1, 1) == '+' then
  due = now + tonumber(string.sub(ARGV[1], 2))
else
  due = tonumber(ARGV[1])
end
local keep = math.max(due - now, 0) + tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- This job id is scheduled already and not yet due: the first schedule stands.
  return {0, ARGV[2]}
end
redis.call('HSET', KEYS[2], unpack(ARGV, 8))
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('ZADD', KEYS[1], due, string.match(KEYS[2], '}:scheduled:(.*)$'))
if status_key then
  redis.call('HSET', status_key, 'job_id', ARGV[2], 'type', ARGV[5], 'deliver_at', due)
  redis.call('PEXPIRE', status_key, keep)
end
if dedup_key then
  redis.call('SET', dedup_key, ARGV[2], 'PX', ARGV[3])
end
return {1, ARGV[2], due}
