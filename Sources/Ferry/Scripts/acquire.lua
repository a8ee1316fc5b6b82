-- Ferry: may the delivered jobs of a read batch start under the queue's rate and concurrency
-- limits? Each job takes what it needs and is recorded running, or is parked in its group's later
-- deliveries until it could pass and recorded waiting: one step, so no slot is taken by a job
-- that does not run and no job waits without being parked (docs/design.md, "Rate and
-- concurrency limits"). One call per batch: each limit's state is read once.
--
-- KEYS[1]  the job stream                       ferry:{Q}:jobs
-- KEYS[2]  the group's later deliveries         ferry:{Q}:delayed:<group>
-- KEYS[3]  the attempts they carry              ferry:{Q}:delayed:<group>:attempts
-- KEYS[4]  the entries they keep in the stream  ferry:{Q}:delayed:<group>:entries
-- KEYS[5]  the queue's limits                   ferry:{Q}:limits (name -> JSON)
-- then     four keys per limit state, in ARGV's order: a concurrency limit's :held, :holders,
--          :handed and :waiting, or a rate's :tat and :reserved, named twice (QueueKeys.limitState;
--          one state per limit, or per limit and key for a per-key limit)
-- then     the jobs' status hashes ferry:{Q}:job:<job_id>, in the jobs' order, when ARGV[5] is '1'
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the lease, ms: how long slots are held without being extended
-- ARGV[4]  how long the parked keys outlive the due time, ms (delay.lua)
-- ARGV[5]  '1' to write the statuses
-- ARGV[6]  the index prefix ferry:{Q}:idx:
-- ARGV[7]  the prefix of the groups' later deliveries ferry:{Q}:delayed:
-- ARGV[8]  s, the number of limit states; then five values each: 'c', the limit's name, its most
--          slots, the name the worker's slots are counted under (its consumer name, or
--          `<consumer>#<n>` after a slot write whose outcome it could not know: Worker.slotHolder),
--          its JSON as the worker read it; or 'r', its name, the spacing between
--          starts (µs), the burst, its JSON; or 'o', the ordering key, '', '', '' (its keys: the
--          key's turn in the group ferry:{Q}:order:<group>:<key>, its :waiting, the key's list of
--          published jobs ferry:{Q}:ordered:<key>, and the turn again)
-- then, per job: its entry ID, this delivery's attempt, '1' when the job has no status in the
--          group yet (a first delivery read from the stream), the job id, its type, m, and the
--          m numbers (from 1) of the limit states that cover it: its ordering key first, then
--          concurrency limits, then rates
--
-- Concurrency: a running job holds a slot, counted for its worker (hand_off in the prelude says
-- how); the worker extends its slots with its jobs' leases and releases them as its jobs end
-- (release.lua, or ack.lua), handing each to the first waiter. A job a slot was handed to takes
-- it. A job finding none waits in the limit's first-come list and is due again when a slot is
-- handed to it, or at the earliest time a worker's slots could lapse (at most a lease away), in
-- case that worker crashed.
-- Rate: GCRA on the limit's theoretical arrival time; a job over it is given the next start
-- time (reserved for it, so a backlog drains at the rate without every waiter coming back at
-- once) and starts when it comes back. Concurrency is decided first: a job waiting for a slot
-- spends no rate. Ordering keys before both: one job of a key runs at a time in each group, in
-- publish order; the key's turn is taken by the first job waiting (or the first to come), kept
-- through its retries, and passed on by order_release.lua at its outcome. The limit state keys live
-- an hour past their last use (a fleet may mix leases).
--
-- Returns {'stale'} (nothing written) when a limit the worker passed was changed or removed since
-- it read them: it reads them again and asks again, so a change decides at once for the jobs
-- `ferry limit set` woke. Otherwise one reply per job: {'run'}, {'wait', limit name, due ms},
-- or {'lost'} when this consumer no longer owns the entry it would park (parking acknowledges it
-- in the group, which only its owner may do). A job that runs is not checked: the worker claimed
-- or read it a moment ago, as start_batch.lua's running records assume, and its outcome is
-- owner-checked as every job's is.
-- ferry:function-flags allow-oom
-- ferry:prelude
local s = tonumber(ARGV[8])
local names, checked = {}, {}
for i = 0, s - 1 do
  if ARGV[9 + i * 5] ~= 'o' then
    names[#names + 1] = ARGV[9 + i * 5 + 1]
    checked[#checked + 1] = ARGV[9 + i * 5 + 4]
  end
end
if #names > 0 then
  local stored = redis.call('HMGET', KEYS[5], unpack(names))
  for i = 1, #names do
    if stored[i] ~= checked[i] then
      return {'stale'}
    end
  end
end
local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now = math.floor(now_us / 1000)
local lease, keep = tonumber(ARGV[3]), tonumber(ARGV[4])
local idle_keep = 3600000

-- Each limit state, read the first time a job needs it and kept up to date as jobs take from it.
local states = {}
local function state(i)
  local st = states[i]
  if st then
    return st
  end
  local at = 9 + (i - 1) * 5
  local k = 5 + (i - 1) * 4
  st = { kind = ARGV[at], name = ARGV[at + 1], a = tonumber(ARGV[at + 2]), b = tonumber(ARGV[at + 3]) or 0,
    k1 = KEYS[k + 1], k2 = KEYS[k + 2], k3 = KEYS[k + 3], k4 = KEYS[k + 4], new = 0, moved = 0 }
  if st.kind == 'c' then
    st.holder = ARGV[at + 3]
    st.held = tonumber(redis.call('HGET', st.k1, '*') or '0')
    -- Full, or jobs wait: free lapsed slots and serve the waiters first.
    if st.held >= st.a or redis.call('EXISTS', st.k4) == 1 then
      st.held = hand_off(st.k1, st.k2, st.k3, st.k4, st.a, now, lease, ARGV[7])
    end
  elseif st.kind == 'o' then
    local turn = redis.call('HMGET', st.k1, 'owner', 'blocked', 'done', 'ending')
    st.owner, st.blocked, st.done = turn[1] or nil, turn[2] or nil, tonumber(turn[3] or '-1')
    -- Its owner is being dead-lettered under `block`: stopped already, before the block lands.
    if turn[4] and turn[4] == st.owner then
      st.blocked = st.owner
    end
  else
    st.tat = math.max(tonumber(redis.call('GET', st.k1) or '0'), now_us)
  end
  states[i] = st
  return st
end

local first_status = 6 + s * 4
local replies = {}
local run = {'run'}
local codes = {}  -- per limit of the job being checked: how it passes; reused, not rebuilt per job
local at = 9 + s * 5
while at <= #ARGV do
  local job = #replies + 1
  local id, attempt, first = ARGV[at], tonumber(ARGV[at + 1]), ARGV[at + 2] == '1'
  local job_id, job_type, m = ARGV[at + 3], ARGV[at + 4], tonumber(ARGV[at + 5])
  local refs = at + 6
  at = refs + m
  local status = ARGV[5] == '1' and KEYS[first_status + job - 1] or nil
  local member = ARGV[1] .. ' ' .. id
  local refused, due
  for r = 1, m do
    local st = state(tonumber(ARGV[refs + r - 1]))
    if st.kind == 'o' then
      -- The key's turn: its owner keeps it; else it is free (no owner, or the owner finished in
      -- this group and its outcome's release never came) and no job published earlier waits.
      local mine = order_of(id)
      local turn = st.owner == id
      if not turn and (not st.owner or (not st.blocked and not unfinished_in(KEYS[1], ARGV[1], KEYS[2], st.owner))) then
        -- Whose turn: the earliest job of the key its publisher listed (ferry:{Q}:ordered:<key>)
        -- that this group has not finished, so jobs read by different workers keep publish
        -- order; a job no publisher listed (a plain XADD) goes by the waiting list instead.
        local next_job
        if redis.call('ZSCORE', st.k3, id) then
          for _, listed in ipairs(redis.call('ZRANGE', st.k3, '(' .. exact(st.done), '+inf', 'BYSCORE', 'LIMIT', 0, 100)) do
            if listed == id or unfinished_in(KEYS[1], ARGV[1], KEYS[2], listed) then
              next_job = listed
              break
            end
            st.done = order_of(listed)  -- finished in this group: no need to look at it again
            st.done_moved = true
          end
          next_job = next_job or ''  -- not reached yet: look again when it comes back
        else
          local first = redis.call('ZRANGE', st.k2, 0, 0, 'WITHSCORES')
          next_job = (first[1] and tonumber(first[2]) < mine) and first[1] or id
        end
        if next_job ~= id then
          if next_job ~= '' then
            redis.call('ZADD', KEYS[2], 'XX', now, next_job)  -- it is that job's turn: wake it
          end
        else
          turn = true
          st.owner = id
          -- Taken whatever the other limits say: the key's turn is this job's while it waits.
          redis.call('HSET', st.k1, 'owner', id, 'key', st.name)
          redis.call('HDEL', st.k1, 'blocked')
          redis.call('ZREM', st.k2, id)
          redis.call('PEXPIRE', st.k1, keep)
        end
      end
      if not turn then
        redis.call('ZADD', st.k2, 'NX', exact(mine), id)
        redis.call('PEXPIRE', st.k2, keep)
        refused, due = 'ordering', now + (st.blocked and 3600000 or lease)
        break
      end
      codes[r] = 'turn'
    elseif st.kind == 'c' then
      -- A first delivery read from the stream was handed nothing yet.
      local mine = not first and redis.call('ZSCORE', st.k3, member)
      if not mine and st.held >= st.a then
        -- First come, first served.
        redis.call('ZADD', st.k4, 'NX', exact(order_of(id)), member)
        st.waited = true
        if not st.earliest then
          local holder = redis.call('ZRANGE', st.k2, 0, 0, 'WITHSCORES')[2]
          local hand_off_ends = redis.call('ZRANGE', st.k3, 0, 0, 'WITHSCORES')[2]
          st.earliest = math.min(tonumber(holder or now + lease), tonumber(hand_off_ends or now + lease))
        end
        refused, due = st.name, math.min(st.earliest + 1, now + lease)
        break
      end
      codes[r] = mine and 'mine' or 'slot'
    else
      local given = not first and redis.call('HGET', st.k2, member)
      if given then
        given = tonumber(given)
        if given > now_us + 1000 then
          refused, due = st.name, math.ceil(given / 1000)
          break
        end
        codes[r] = 'given'
      elseif st.tat - (st.b - 1) * st.a <= now_us then
        codes[r] = 'rate'
      else
        -- The next start time is this job's: the arrival time moves on as if it had started.
        local start = st.tat - (st.b - 1) * st.a
        st.tat = st.tat + st.a
        st.dirty = true
        redis.call('HSET', st.k2, member, string.format('%.0f', start))
        st.reserved_until = math.max(st.reserved_until or 0, start)
        refused, due = st.name, math.ceil(start / 1000)
        break
      end
    end
  end
  local record, lane
  if refused then
    record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], id)
  end
  if refused and not record then
    replies[job] = {'lost'}
  elseif refused then
    park_entry(lane, KEYS[2], KEYS[3], KEYS[4], ARGV[1], id, due, attempt - 1, keep, now)
    if status then
      set_status(status, ARGV[6], ARGV[1], job_id, id, 'waiting', now, 0,
        { 'attempts', attempt - 1, 'waiting_for', refused, 'next_attempt_at', due }, { 'type', job_type },
        first and 'none' or nil)
    end
    replies[job] = {'wait', refused, due}
  else
    for r = 1, m do
      local st, code = states[tonumber(ARGV[refs + r - 1])], codes[r]
      if code == 'slot' then
        -- Counted for this worker in one write per limit at the end.
        st.new = st.new + 1
        st.held = st.held + 1
        if not first then
          redis.call('ZREM', st.k4, member)
        end
      elseif code == 'mine' then
        -- Handed to this job: already in the total, now this worker's.
        st.moved = st.moved + 1
        redis.call('ZREM', st.k3, member)
      elseif code == 'turn' then
        -- The ordering key was taken above.
      elseif code == 'given' then
        redis.call('HDEL', st.k2, member)
      else
        st.tat = st.tat + st.a
        st.dirty = true
      end
    end
    if status then
      local fields = { 'attempts', attempt, 'consumer', ARGV[2], 'started_at', now }
      if not first then
        fields[#fields + 1] = 'next_attempt_at'
        fields[#fields + 1] = ''
        fields[#fields + 1] = 'waiting_for'
        fields[#fields + 1] = ''
      end
      set_status(status, ARGV[6], ARGV[1], job_id, id, 'running', now, 0, fields, { 'type', job_type },
        first and 'none' or nil)
    end
    replies[job] = run
  end
end

for _, st in pairs(states) do
  if st.new + st.moved > 0 then
    redis.call('HINCRBY', st.k1, st.holder, st.new + st.moved)
    if st.new > 0 then
      redis.call('HINCRBY', st.k1, '*', st.new)
    end
    redis.call('ZADD', st.k2, now + lease, st.holder)
    redis.call('PEXPIRE', st.k1, lease * 2 + idle_keep)
    redis.call('PEXPIRE', st.k2, lease * 2 + idle_keep)
  end
  if st.waited then
    redis.call('PEXPIRE', st.k4, lease * 3 + idle_keep)
  end
  if st.dirty then
    redis.call('SET', st.k1, string.format('%.0f', st.tat), 'PX', math.ceil((st.tat - now_us) / 1000) + idle_keep)
  end
  if st.done_moved then
    redis.call('HSET', st.k1, 'done', exact(st.done))
    redis.call('PEXPIRE', st.k1, keep)
  end
  if st.reserved_until then
    outlive(st.k2, math.ceil((st.reserved_until - now_us) / 1000) + lease * 3 + idle_keep)
  end
end
return replies
