-- Ferry's shared script parts: the EmbedLuaScripts plugin puts this text where a script has the
-- line `-- ferry:prelude`, so the ownership check and Redis's clock are written once. Files
-- whose names start with `_` are parts, not scripts of their own. Ferry itself calls the scripts
-- as functions of one Redis function library, where this text runs once, at load (FerryScripts):
-- a top-level variable declared without a value (`local events_on`) is one call's state, and
-- each function sets it to nil before its body runs; any other top-level variable must be a
-- constant, or a cache of values that depend only on their inputs (joined's names).

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

-- The queue's lane streams: `stream` (the normal lane) first, then ferry:{Q}:jobs:p<level> of
-- every other level in use (ferry:{Q}:jobs:lanes), most urgent first.
local function lane_streams(stream)
  local levels = redis.call('SMEMBERS', stream .. ':lanes')
  table.sort(levels)
  local lanes = { stream }
  for _, level in ipairs(levels) do
    if level ~= '5' then
      lanes[#lanes + 1] = stream .. ':p' .. level
    end
  end
  return lanes
end

-- The pending-list record of `id` in `group` and the lane that holds it: `stream` first (the
-- normal lane, where most jobs are; one XPENDING), then the queue's other lanes. Entry IDs are
-- unique across lanes (add_job), so the first found is the one. Nil and `stream` when no lane has
-- it pending.
local function pending_lane(stream, group, id)
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] then
    return pending[1], stream
  end
  local lanes = lane_streams(stream)
  for i = 2, #lanes do
    pending = redis.call('XPENDING', lanes[i], group, id, id, 1)
    if pending[1] then
      return pending[1], lanes[i]
    end
  end
  return nil, stream
end

-- owned() in whichever lane holds the entry: its record (nil unless `consumer` owns it) and the
-- lane, which the transition then acts on.
local function owned_lane(stream, group, consumer, id)
  local record, lane = pending_lane(stream, group, id)
  if record and record[2] == consumer then
    return record, lane
  end
  return nil, lane
end

-- The entries of `stream` between IDs `low` and `high` that `consumer` owns in `group`, as a
-- set (entry ID -> true), for a flush of `n` entries in that range: one XPENDING filtered by
-- the consumer instead of one per entry (each redis.call costs Redis's thread about a
-- microsecond besides its work). It reads at most 2n + 16 records, so a range crowded with
-- the consumer's other running jobs costs no more than that; an entry it does not settle (not
-- among them, or in another lane) is checked on its own by the caller with owned_lane.
local function owned_in_range(stream, group, consumer, low, high, n)
  local owned = {}
  if n < 2 or low == '' then
    return owned
  end
  for _, record in ipairs(redis.call('XPENDING', stream, group, low, high, 2 * n + 16, consumer)) do
    owned[record[1]] = true
  end
  return owned
end

-- Redis's clock in milliseconds since the epoch: the one clock every worker shares.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

-- Gives `key` an expiry of at least `ttl` ms (one it has is never shortened).
local function outlive(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

-- Parks delivered entry `id` in `group`'s later deliveries until `due` (ms, Redis's clock):
-- acknowledged in the group (it leaves the pending list; no other group sees anything), its due
-- time, the delivery attempts it carries and its own time (which the retention pass keeps)
-- recorded, the three keys outliving the due time by `keep` ms. The caller checked ownership.
local function park_entry(stream, due_key, attempts_key, entries_key, group, id, due, carried, keep, now)
  redis.call('XACK', stream, group, id)
  redis.call('ZADD', due_key, due, id)
  redis.call('HSET', attempts_key, id, carried)
  redis.call('ZADD', entries_key, tonumber(string.match(id, '^(%d+)')), id)
  local ttl = math.max(due - now, 0) + keep
  outlive(due_key, ttl)
  outlive(attempts_key, ttl)
  outlive(entries_key, ttl)
end

-- The stream's consumer groups as XINFO GROUPS reports them, each a table of its fields
-- (`name`, `pending`, `last-delivered-id`, `lag`, ...); none when the stream does not exist.
local function group_infos(stream)
  if redis.call('EXISTS', stream) == 0 then
    return {}
  end
  local infos = {}
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local info = {}
    for i = 1, #group, 2 do
      info[group[i]] = group[i + 1]
    end
    infos[#infos + 1] = info
  end
  return infos
end

-- Priority lanes (docs/wire-format.md, "Priorities"): the level a `priority` field names, 0 (most
-- urgent) to 9; 5, the normal lane, for none or a value Ferry does not know.
local function priority_level(value)
  if value == nil or value == 'normal' then
    return 5
  elseif value == 'high' then
    return 0
  elseif value == 'low' then
    return 9
  end
  local level = tonumber(value)
  if level and level >= 0 and level <= 9 and level == math.floor(level) then
    return level
  end
  return 5
end

-- Publishes one job, once per idempotency key: when `window` (ms) is not '' and `dedup_key`
-- holds the id of a job published within it, returns {0, that id} and writes nothing; else
-- `add()` adds the entry and returns its ID, the job id (`job_id`, else the entry ID) is kept
-- under the key for the window, and it returns {1, job id, entry ID}.
local function publish_once(window, dedup_key, job_id, add)
  if window ~= '' then
    local first = redis.call('GET', dedup_key)
    if first then
      return {0, first}
    end
  end
  local entry_id = add()
  job_id = job_id ~= '' and job_id or entry_id
  if window ~= '' then
    redis.call('SET', dedup_key, job_id, 'PX', window)
  end
  return {1, job_id, entry_id}
end

-- Adds a job's entry (fields and values args[from..to]) to the lane of its `priority` and
-- returns the entry ID and the lane's stream (a job with an ordering key always goes to the normal lane). The normal
-- lane is `stream` itself (a plain XADD). Another lane's entry
-- gets an ID above every ID of every lane, and `stream`'s last ID is moved up to it (XSETID; a
-- stream that does not exist yet is made empty with it), so a later XADD to `stream` from any
-- producer gets a higher one: entry IDs stay unique across a queue's lanes, and everything
-- keyed by entry ID (later deliveries, limits, statuses) serves every lane.
local function add_job(stream, args, from, to)
  local level = 5
  for i = from, to - 1, 2 do
    if args[i] == 'priority' then
      level = priority_level(args[i + 1])
    elseif args[i] == 'ordering_key' then
      -- Its key's order decides when an ordered job runs: always the normal lane.
      level = 5
      break
    end
  end
  if level == 5 then
    return redis.call('XADD', stream, '*', unpack(args, from, to)), stream
  end
  local lane = stream .. ':p' .. level
  -- One reading of the clock: a second one could pass a millisecond and go below the last ID.
  local now = now_ms()
  local id = string.format('%.0f', now) .. '-0'
  if redis.call('EXISTS', stream) == 1 then
    local info = redis.call('XINFO', 'STREAM', stream)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local ms, seq = string.match(info[i + 1], '^(%d+)-(%d+)$')
        if tonumber(ms) >= now then
          id = ms .. '-' .. string.format('%.0f', tonumber(seq) + 1)
        end
        break
      end
    end
    redis.call('XADD', lane, id, unpack(args, from, to))
    redis.call('XSETID', stream, id)
  else
    redis.call('XADD', lane, id, unpack(args, from, to))
    redis.call('XADD', stream, 'MAXLEN', 0, id, 'lane', lane)
  end
  redis.call('SADD', stream .. ':lanes', level)
  return id, lane
end

-- Adds a finished job's entry again (its fields `flat`, as XRANGE gives them) for `group` only:
-- a new entry (a fresh delivery count) without the `dead_letter.*` fields, with `job_id` set to
-- `source_id` when the job had none (its id survives), and with `redrive_group` naming `group`,
-- so workers of other groups, which already ran it, acknowledge it unrun. A redrive and a
-- cancelled job's retry. Returns the new entry ID.
local function add_again(stream, flat, source_id, group)
  local fields, has_job_id = {}, false
  for i = 1, #flat, 2 do
    local name = flat[i]
    if string.sub(name, 1, 12) ~= 'dead_letter.' and name ~= 'redrive_group' then
      if name == 'job_id' then has_job_id = true end
      fields[#fields + 1] = name
      fields[#fields + 1] = flat[i + 1]
    end
  end
  if not has_job_id and source_id then
    fields[#fields + 1] = 'job_id'
    fields[#fields + 1] = source_id
  end
  if group then
    fields[#fields + 1] = 'redrive_group'
    fields[#fields + 1] = group
  end
  return add_job(stream, fields, 1, #fields)
end

-- Whether stream entry ID `a` comes before `b` (`<ms>-<seq>`, compared as numbers, as Redis orders them).
local function id_before(a, b)
  local a_ms, a_seq = string.match(a, '^(%d+)-(%d+)$')
  local b_ms, b_seq = string.match(b, '^(%d+)-(%d+)$')
  a_ms, a_seq, b_ms, b_seq = tonumber(a_ms), tonumber(a_seq), tonumber(b_ms), tonumber(b_seq)
  return a_ms < b_ms or (a_ms == b_ms and a_seq < b_seq)
end

-- Whether some group has yet to finish entry `id` of lane stream `lane`: unread, pending, or
-- parked for a later delivery (under `delayed_prefix`<group>). An entry trimmed from the lane
-- (which happens once every group finished it) reads as finished; every entry of a lane no
-- group reads yet as unfinished.
local function entry_unfinished(lane, id, delayed_prefix)
  local groups = group_infos(lane)
  if #groups == 0 then
    return true
  end
  for _, info in ipairs(groups) do
    if id_before(info['last-delivered-id'], id) or redis.call('XPENDING', lane, info['name'], id, id, 1)[1]
        or redis.call('ZSCORE', delayed_prefix .. info['name'], id) then
      return true
    end
  end
  return false
end

-- A concurrency limit's slots (QueueKeys.limitState): `held` counts the slots each worker's
-- running jobs hold (consumer -> n, and `*` -> the total, which includes the slots handed to
-- waiting jobs), `holders` scores each worker by when its lease ends (its worker extends it with
-- its jobs' leases), `handed` scores each waiting job a slot was handed to (`<group> <entry ID>`)
-- by when that hand-off lapses, `waiting` holds the jobs waiting, first come first served.
-- Counting per worker, not per job, keeps a job's start and end free of per-job writes here.

-- Frees the slots of workers whose lease ended (crashed or frozen) and of hand-offs no job came
-- for, then gives free slots to the jobs waiting: each gets a slot held for it for a lease and is
-- made due now in its group's later deliveries (`<delayed_prefix><group>`), so the next worker of
-- its group to look takes it back and finds the slot its own; a waiter no longer parked there
-- (cancelled) is dropped. Returns the slots now held, and how many went to waiters of `group`.
local function hand_off(held, holders, handed, waiting, most, now, lease, delayed_prefix, group)
  local total = tonumber(redis.call('HGET', held, '*') or '0')
  local before = total
  for _, consumer in ipairs(redis.call('ZRANGE', holders, '-inf', now, 'BYSCORE')) do
    total = total - tonumber(redis.call('HGET', held, consumer) or '0')
    redis.call('HDEL', held, consumer)
    redis.call('ZREM', holders, consumer)
  end
  total = total - redis.call('ZREMRANGEBYSCORE', handed, '-inf', now)
  local to_group = 0
  while total < most do
    local first = redis.call('ZPOPMIN', waiting)
    if not first[1] then
      break
    end
    local waiter_group, id = string.match(first[1], '^(.*) (%S+)$')
    if waiter_group and redis.call('ZSCORE', delayed_prefix .. waiter_group, id) then
      redis.call('ZADD', delayed_prefix .. waiter_group, now, id)
      redis.call('ZADD', handed, now + lease, first[1])
      outlive(handed, lease * 2 + 3600000)
      total = total + 1
      if waiter_group == group then
        to_group = to_group + 1
      end
    end
  end
  if total ~= before then
    redis.call('HSET', held, '*', math.max(total, 0))
    outlive(held, lease * 2 + 3600000)
  end
  return total, to_group
end

-- A job's place in first-come order: its entry's time, and its sequence within the millisecond.
local function order_of(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms) * 1000 + math.min(tonumber(seq), 999)
end

-- A number as redis.call must be given it when it has more than 14 digits (an order_of): Redis
-- turns a Lua number argument into text with "%.14g", which would round it.
local function exact(number)
  return string.format('%.0f', number)
end

-- Ordering keys: makes the first job waiting for its key's turn (`waiting`, entry ID -> publish
-- order) due now in its group's later deliveries (`delayed`), so a worker takes it back and it
-- takes the key (acquire.lua). It leaves the waiting list only when it takes the key.
local function wake_next_in_order(waiting, delayed)
  local first = redis.call('ZRANGE', waiting, 0, 0)[1]
  if first then
    redis.call('ZADD', delayed, 'XX', now_ms(), first)
    return 1
  end
  return 0
end

-- Whether `group` has yet to finish entry `id`: pending, or parked for a later delivery.
local function unfinished_in(stream, group, delayed, id)
  return redis.call('XPENDING', stream, group, id, id, 1)[1] ~= nil or redis.call('ZSCORE', delayed, id) ~= false
end

-- The job holding an ordering key's turn (`turn`: owner, blocked, blocked_at, key, and `ending`,
-- the owner whose dead letter under `block` is on its way, written before it) ended in its
-- group: the turn passes to the next job waiting, or with `block` (a dead letter under
-- `--ordering-on-dead block`) the key stops and is listed in `registry` ('<group> <key as keys
-- write it>' -> the key) until `ferry ordering resume`. Only the owner's finished outcome moves
-- the key: a job parked for a retry or left for another worker keeps its turn.
local function pass_turn(stream, group, delayed, registry, turn, waiting, id, block, field, key, keep)
  if redis.call('HGET', turn, 'owner') ~= id or unfinished_in(stream, group, delayed, id) then
    return 0
  end
  if block then
    redis.call('HSET', turn, 'blocked', id, 'blocked_at', now_ms(), 'key', key)
    redis.call('HDEL', turn, 'ending')
    redis.call('HSET', registry, field, key)
    redis.call('PEXPIRE', turn, keep)
    return 0
  end
  -- The turn's hash stays (it keeps how far the group has finished the key's list) and expires.
  redis.call('HDEL', turn, 'owner', 'ending')
  return wake_next_in_order(waiting, delayed)
end

-- Records a published ordered job in its key's list (ferry:{Q}:ordered:<key>, entry ID -> publish
-- order), which decides whose turn the key is in every group (acquire.lua): the list lives a week
-- past its last publish, and past 1,000 members its oldest ones every group has finished (read,
-- not pending, not parked under `delayed_prefix`) are dropped.
local function register_ordered(stream, list, id, delayed_prefix)
  redis.call('ZADD', list, exact(order_of(id)), id)
  redis.call('PEXPIRE', list, 604800000)
  if redis.call('ZCARD', list) <= 1000 then
    return
  end
  local groups = group_infos(stream)
  for _, old in ipairs(redis.call('ZRANGE', list, 0, 999)) do
    for _, info in ipairs(groups) do
      if id_before(info['last-delivered-id'], old) or unfinished_in(stream, info['name'], delayed_prefix .. info['name'], old) then
        return
      end
    end
    redis.call('ZREM', list, old)
  end
end

-- What a worker's flush releases after its jobs' outcomes: release.lua's work, also done at the
-- end of ack.lua when a flush has both. Reads KEYS from `first_key` on and ARGV from `at` on:
--   ARGV: the lease (ms), the prefix of the groups' later deliveries, the worker's group, s,
--         then for each of s limit states the limit's most slots, how many of the worker's jobs
--         holding one ended, and the name their slots were counted under (a state appears once
--         per name: Worker.slotHolder); then o, then for each of o ordering keys the
--         entry ID of the job that ended, 'block' or 'release', the registry field, the key as
--         given; then how long a key's state outlives its last change (ms)
--   KEYS: for each limit state its held, holders, handed and waiting keys; then, when o > 0, the
--         job stream, the group's later deliveries and the blocked-keys registry, and for each
--         ordering key its turn and waiting keys
-- Each slot freed goes to the first job waiting for it; a worker whose slots were freed as
-- lapsed (it was cut off longer than its lease) frees nothing twice. Returns how many slots and
-- turns went to waiting jobs of the worker's group, which it then looks for at once.
local function release_slots(first_key, at)
  local lease, delayed_prefix, group = tonumber(ARGV[at]), ARGV[at + 1], ARGV[at + 2]
  local states = tonumber(ARGV[at + 3])
  at = at + 4
  local now
  local own = 0
  local k = first_key
  for _ = 1, states do
    local most, ended, holder = tonumber(ARGV[at]), tonumber(ARGV[at + 1]), ARGV[at + 2]
    at = at + 3
    local freed = math.min(ended, tonumber(redis.call('HGET', KEYS[k], holder) or '0'))
    if freed > 0 then
      if redis.call('HINCRBY', KEYS[k], holder, -freed) <= 0 then
        redis.call('HDEL', KEYS[k], holder)
        redis.call('ZREM', KEYS[k + 1], holder)
      end
      redis.call('HINCRBY', KEYS[k], '*', -freed)
    end
    if redis.call('EXISTS', KEYS[k + 3]) == 1 then
      now = now or now_ms()
      local _, handed = hand_off(KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], most, now, lease, delayed_prefix, group)
      own = own + handed
    end
    k = k + 4
  end
  local orders = tonumber(ARGV[at])
  at = at + 1
  if orders > 0 then
    local stream, delayed, registry = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
    local keep = ARGV[at + orders * 4]
    for _ = 1, orders do
      own = own + pass_turn(stream, group, delayed, registry, KEYS[k], KEYS[k + 1], ARGV[at], ARGV[at + 1] == 'block',
        ARGV[at + 2], ARGV[at + 3], keep)
      k = k + 2
      at = at + 4
    end
  end
  return own
end

-- Constant strings and comparisons rather than tables: this text runs on every script call,
-- and building a table costs each call about a microsecond of Redis's one thread (measured).

-- Whether a job is done with in its group in `state` (JobState.isTerminal in Swift).
local function is_terminal(state)
  return state == 'succeeded' or state == 'dead' or state == 'cancelled' or state == 'deleted'
end

-- The moves a group's state may make, ` from>to ` each (JobState.successors in Swift; a test
-- keeps them equal). A terminal state moves nowhere but `dead>queued` (a redrive) and
-- `cancelled>queued` (a cancelled job retried).
-- One literal, not a concatenation: this line runs on every script call.
local moves = [[
 retrying>waiting retrying>running retrying>succeeded retrying>dead retrying>cancelled retrying>deleted 
 failed>waiting failed>running failed>succeeded failed>dead failed>cancelled failed>deleted 
 waiting>waiting waiting>running waiting>succeeded waiting>dead waiting>cancelled waiting>deleted 
 queued>scheduled queued>waiting queued>running queued>succeeded queued>dead queued>cancelled queued>deleted 
 scheduled>queued scheduled>waiting scheduled>running scheduled>succeeded scheduled>dead scheduled>cancelled scheduled>deleted 
 running>running running>waiting running>retrying running>failed running>succeeded running>dead running>cancelled running>deleted 
 dead>queued cancelled>queued 
]]
local states = ' scheduled queued waiting running retrying failed succeeded dead cancelled deleted '

-- Whether a group's state may move from `from` to `to`; any move from a state this version does
-- not know is allowed.
local function may_move(from, to)
  if not string.find(states, ' ' .. from .. ' ', 1, true) then
    return true
  end
  return string.find(moves, ' ' .. from .. '>' .. to .. ' ', 1, true) ~= nil
end

-- Writes one group's status of a job (data format 2) and moves the job in that group's index,
-- the one write every transition makes, so the status can never disagree with the entry:
--   key      the job's status hash        ferry:{Q}:job:<id>
--   index    the queue's index prefix     ferry:{Q}:idx:  (sets <index><group>:<state>; no set
--            for 'queued', whose count is the group's lag, nor 'scheduled')
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
-- of the script. A move may_move above does not allow, for the same entry, is refused and
-- nothing is written (a stale write arriving after the job's outcome; a job id used again by a
-- new entry starts afresh). Returns the group's state before this write (false for none), and
-- true when the write was refused.
-- States with no index set: a group's queued jobs are its lag, and its scheduled ones wait in
-- the queue's due index or in the group's later deliveries (ferry:{Q}:delayed:<group>).
local function unindexed(state)
  return state == 'queued' or state == 'scheduled'
end

-- Names built from their parts (a group's index sets, a minute's hash of packed statuses, the
-- queue's event stream) and kept for later calls: Lua makes a new string for every
-- concatenation, and a call that moves one job would otherwise build each of them again. A
-- name depends on nothing but its parts, so keeping it across calls is safe (a library loaded
-- again starts empty; a script sent with EVAL keeps them for its call). At most
-- `most_names` are kept: then the cache starts again, so the library's memory stays bounded
-- however many queues, groups and minutes it has seen.
local name_cache, cached_names, most_names = {}, 0, 10000
local function joined(first, second)
  local by_first = name_cache[first]
  local name = by_first and by_first[second]
  if name then
    return name
  end
  if cached_names >= most_names then
    name_cache, cached_names, by_first = {}, 0, nil
  end
  if not by_first then
    by_first = {}
    name_cache[first] = by_first
  end
  name = first .. second
  by_first[second] = name
  cached_names = cached_names + 1
  return name
end

-- The queue's key prefix `ferry:{Q}:` from its index prefix `ferry:{Q}:idx:` (kept, as joined's names).
local queue_prefixes, cached_prefixes = {}, 0
local function queue_prefix(index)
  local prefix = queue_prefixes[index]
  if not prefix then
    if cached_prefixes >= most_names then
      queue_prefixes, cached_prefixes = {}, 0
    end
    prefix = string.sub(index, 1, -5)
    queue_prefixes[index] = prefix
    cached_prefixes = cached_prefixes + 1
  end
  return prefix
end

-- Appends one transition to the queue's event stream ferry:{Q}:events, when it exists (`ferry
-- queue events on`): what the HTTP API's server-sent events read. Its name is built from the
-- index prefix (same {Q} slot), and whether it exists is asked once per script call. Capped
-- at about 10,000 entries (MAXLEN ~, trimmed in whole nodes), so it never grows past that.
local events_key, events_on
-- Whether the queue's event stream is on (asked once per script call); `index` is its index prefix.
local function events_enabled(index)
  if events_on == nil then
    events_key = joined(queue_prefix(index), 'events')
    events_on = redis.call('EXISTS', events_key) == 1
  end
  return events_on
end

-- `reason` is only for a `refused` publish (publish_batch.lua): why the queue turned it away.
local function record_event(index, group, job_id, state, previous, now, reason)
  if not events_enabled(index) then
    return
  end
  if reason then
    redis.call('XADD', events_key, 'MAXLEN', '~', 10000, '*', 'job_id', job_id, 'group', group, 'state', state,
      'from', previous or '', 'at', now, 'reason', reason)
  else
    redis.call('XADD', events_key, 'MAXLEN', '~', 10000, '*', 'job_id', job_id, 'group', group, 'state', state,
      'from', previous or '', 'at', now)
  end
end

-- Index moves of a script call that moves many jobs (a flush's acknowledgements, a read
-- batch's start): gathered per set by set_status and written by flush_index as one ZADD or ZREM
-- per set, not one per job. Each redis.call costs Redis's one thread about a microsecond besides
-- the command's own work (measured with `ferry bench worker`), so a batch of 25 saves about 24
-- of them per set. Nil (the default) writes each move at once. A set's moves keep their order:
-- a ZREM after a gathered ZADD of the same set writes the ZADDs first.
local gathered_index
local gathered_order

-- The values of fields `first` and `second` among the name, value pairs list[from..to] (an
-- entry's fields as XRANGE or a script's ARGV gives them); nil for one that is not there.
local function two_fields(list, from, to, first, second)
  local a, b
  for i = from, to - 1, 2 do
    if list[i] == first then
      a = list[i + 1]
    elseif list[i] == second then
      b = list[i + 1]
    end
  end
  return a, b
end

-- `op key [extra] values...` for a list of values of any length: unpack() takes at most about
-- 8,000 values, so a long list goes in parts of 4,000 (a flush's XACK, an index set's ZADD).
local function call_in_parts(op, key, extra, values)
  for first = 1, #values, 4000 do
    local last = math.min(first + 3999, #values)
    if extra then
      redis.call(op, key, extra, unpack(values, first, last))
    else
      redis.call(op, key, unpack(values, first, last))
    end
  end
end

local function write_index(set, gathered)
  call_in_parts(gathered.op, set, nil, gathered.args)
end

-- Starts gathering index moves until flush_index().
local function gather_index()
  gathered_index, gathered_order = {}, {}
end

-- Writes the gathered index moves, one command per set, and stops gathering.
local function flush_index()
  if gathered_index then
    for _, set in ipairs(gathered_order) do
      local gathered = gathered_index[set]
      if #gathered.args > 0 then write_index(set, gathered) end
    end
  end
  gathered_index, gathered_order = nil, nil
end

-- ZADD `member` at `score` (op 'ZADD') or ZREM it (score nil) in index set `set`, now or gathered.
local function move_in_index(op, set, score, member)
  if not gathered_index then
    if score then
      redis.call(op, set, score, member)
    else
      redis.call(op, set, member)
    end
    return
  end
  local gathered = gathered_index[set]
  if not gathered then
    gathered = { op = op, args = {} }
    gathered_index[set] = gathered
    gathered_order[#gathered_order + 1] = set
  elseif gathered.op ~= op then
    write_index(set, gathered)
    gathered.op, gathered.args = op, {}
  end
  local args = gathered.args
  if score then args[#args + 1] = score end
  args[#args + 1] = member
end

-- What a group's running record holds besides its state (start_batch.lua, or ack.lua when the
-- record is written with the job's outcome): the delivery attempt, the consumer, when it
-- started, and for a retry an empty next_attempt_at (its time is past once it runs again; a
-- first delivery has none to clear). Also the `from` set_status takes: 'none' for a first
-- delivery, which has no state before it; nil for a later one, whose state is read.
local function running_fields(attempt, consumer, started_at)
  local fields = { 'attempts', attempt, 'consumer', consumer, 'started_at', started_at }
  if attempt == '1' then
    return fields, 'none'
  end
  fields[7], fields[8] = 'next_attempt_at', ''
  return fields, nil
end

-- The job's own fields a running record writes: its type, and its flow-control key when it has
-- one (a listing by key finds the job by it: its publish may have written no status).
local function job_fields(job_type, key)
  if key == '' then
    return { 'type', job_type }
  end
  return { 'type', job_type, 'key', key }
end

-- The list `lists[name]`, made (and `name` added to `order`) on first use: a script gathers
-- what it writes by key, to write each key once, in the order the keys came.
local function list_named(lists, order, name)
  local list = lists[name]
  if not list then
    list = {}
    lists[name] = list
    order[#order + 1] = name
  end
  return list
end

-- Succeeded statuses kept without a key per job (data format 3): a job whose id is its entry
-- ID, that a group ran once and that succeeded with its running record still unwritten (the
-- common case), has its status in the hash of the minute it was published,
-- ferry:{Q}:succeeded:<entry ms / 60000>, as field `<group>.<entry ID>` with the packed value
-- `succeeded|<finished_at>|<started_at>|<attempts>|<processing_ms>|<consumer>|<type>`. Making
-- a key costs Redis more than the dozen fields in it (docs/design.md, "Redis time per job"):
-- a field in a shared hash costs a fraction. The job is found from its id (the minute is in
-- it), and the hash expires at the latest time any of its jobs' statuses should go.
local function succeeded_hash_of_minute(index, minute)
  return joined(joined(queue_prefix(index), 'succeeded:'), minute)
end
local function minute_of(ms)
  return math.floor(tonumber(ms) / 60000)
end
local function succeeded_hash(index, entry_id)
  return succeeded_hash_of_minute(index, minute_of(string.match(entry_id, '^(%d+)')))
end

-- A group's packed succeeded status of `entry_id` (see succeeded_hash), or nil when it has none:
-- its finished_at, attempts and type.
local function packed_succeeded(index, group, entry_id)
  if not string.match(entry_id, '^%d+%-%d+$') then
    return nil
  end
  local value = redis.call('HGET', succeeded_hash(index, entry_id), group .. '.' .. entry_id)
  if not value then
    return nil
  end
  local finished_at, attempts, job_type = string.match(value, '^succeeded|([^|]*)|[^|]*|([^|]*)|[^|]*|[^|]*|(.*)$')
  return { finished_at = finished_at, attempts = attempts, type = job_type }
end

-- The packed statuses of a script call, by minute hash: one HSET per hash for the call. Also
-- what the call's successes share, worked out once: the last minute packed into and its list of
-- fields (a flush's jobs were mostly published in one minute), the group's succeeded index set
-- and the group's field prefix.
local packed_hashes, packed_order, packed_minute, packed_fields, packed_set, packed_prefix

-- Records a group's succeeded status of a job packed (see succeeded_hash): `value` is the packed
-- value the worker built. Moves the job in the group's index as set_status would (a first
-- delivery: no state before, no event). A call packs for one group of one queue (ack.lua's).
-- Per job this is a flush's hot path: it runs once for each quick success, so what the call's
-- jobs share is made once (about 0.6 µs of Redis's thread a job less, measured on ack.lua).
local function pack_succeeded(index, group, entry_id, value)
  local ms = string.match(entry_id, '^(%d+)')
  local minute = minute_of(ms)
  if minute ~= packed_minute then
    if not packed_order then
      packed_hashes, packed_order = {}, {}
      packed_set = joined(joined(joined(index, group), ':'), 'succeeded')
      packed_prefix = joined(group, '.')
    end
    packed_fields = list_named(packed_hashes, packed_order, succeeded_hash_of_minute(index, minute))
    packed_minute = minute
  end
  packed_fields[#packed_fields + 1] = packed_prefix .. entry_id
  packed_fields[#packed_fields + 1] = value
  move_in_index('ZADD', packed_set, ms, entry_id)
end

-- Writes the packed statuses gathered by pack_succeeded, each minute hash kept `keep` ms from
-- `now` at least (never shortened). Its expiry is read first (PEXPIRETIME, -1 for a new hash)
-- and written only when it must grow: workers' calls often share a millisecond, and a
-- PEXPIREAT GT that cannot lengthen cannot tell a hash with an expiry from a new one without
-- (which a second call, NX, then had to set).
local function flush_packed(now, keep)
  if not packed_order then
    return
  end
  local expires_at = tonumber(now) + tonumber(keep)
  for _, name in ipairs(packed_order) do
    call_in_parts('HSET', name, nil, packed_hashes[name])
    local current = redis.call('PEXPIRETIME', name)
    if current < expires_at then
      redis.call('PEXPIREAT', name, string.format('%.0f', expires_at))
    end
  end
  packed_hashes, packed_order, packed_minute, packed_fields, packed_set, packed_prefix = nil
end

local function set_status(key, index, group, job_id, entry_id, state, now, keep, fields, shared, from)
  local prefix = joined(group, '.')
  local previous = from
  local terminal = is_terminal(state)
  -- When the hash expires (ms): the latest any group's finish asked for, since a group still
  -- running removes the expiry (PERSIST) and a later, shorter keep must not cut an earlier one.
  local expires_at
  if not previous then
    local current = redis.call('HMGET', key, joined(prefix, 'state'), 'entry_id', 'expires_at')
    previous = current[1]
    if previous and current[2] == entry_id and not may_move(previous, state) then
      return previous, true
    end
    expires_at = current[3]
  elseif previous == 'none' then
    previous = false
  end
  local values = { joined(prefix, 'state'), state, joined(prefix, 'updated_at'), now }
  if terminal then
    if not from then
      expires_at = tonumber(expires_at or '0')
    else
      expires_at = tonumber(redis.call('HGET', key, 'expires_at') or '0')
    end
    expires_at = math.max(expires_at, tonumber(now) + tonumber(keep))
    values[#values + 1] = 'expires_at'
    values[#values + 1] = string.format('%.0f', expires_at)
  end
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
  -- `ferry:{Q}:job:<id>` and `ferry:{Q}:idx:` (QueueKeys) share a prefix as long as the
  -- index's: the member starts after it (string.sub costs less than a pattern match).
  local member = string.sub(key, #index + 1)
  if previous and previous ~= state and not unindexed(previous) then
    move_in_index('ZREM', joined(sets, previous), nil, member)
  end
  if not unindexed(state) then
    move_in_index('ZADD', joined(sets, state), string.match(entry_id, '^(%d+)'), member)
  end
  if terminal then
    -- Replaces a queued record's publish-time expiry too (a first delivery's outcome written
    -- with its running record, ack.lua).
    redis.call('PEXPIREAT', key, string.format('%.0f', expires_at))
  elseif from ~= 'none' or job_id ~= entry_id then
    -- A first delivery of a job whose id is its entry ID has no hash before this write (its
    -- publish writes none: publish_batch.lua), so nothing to persist.
    redis.call('PERSIST', key)
  end
  record_event(index, group, job_id, state, previous, now)
  return previous
end
