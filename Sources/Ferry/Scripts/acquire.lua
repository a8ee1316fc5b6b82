-- Ferry: may a delivered job start under the queue's rate and concurrency limits? Takes what it
-- needs and records it running, or parks it in its group's later deliveries until it could
-- pass, recorded waiting: one step, so no slot is taken by a job that does not run and no job
-- waits without being parked (docs/design.md, "Rate and concurrency limits").
--
-- KEYS[1]  the job stream                       ferry:{Q}:jobs
-- KEYS[2]  the group's later deliveries         ferry:{Q}:delayed:<group>
-- KEYS[3]  the attempts they carry              ferry:{Q}:delayed:<group>:attempts
-- KEYS[4]  the entries they keep in the stream  ferry:{Q}:delayed:<group>:entries
-- KEYS[5]  the queue's limits                   ferry:{Q}:limits (name -> JSON)
-- KEYS[6]  the job's status hash ferry:{Q}:job:<job_id>, when ARGV[8] is '1'
-- then, for each limit in ARGV's order, two keys: a concurrency limit's :slots and :waiting,
--          or a rate's :tat and :reserved (QueueKeys.limitState)
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  this delivery's attempt number
-- ARGV[5]  '1' when the job has no status in the group yet (a first delivery read from the stream)
-- ARGV[6]  the lease, ms: how long a slot is held without being extended
-- ARGV[7]  how long the parked keys outlive the due time, ms (delay.lua)
-- ARGV[8]  '1' to write the status
-- ARGV[9]  the index prefix ferry:{Q}:idx:
-- ARGV[10] the job id
-- ARGV[11] the job's type
-- ARGV[12] the prefix of the groups' later deliveries ferry:{Q}:delayed:
-- ARGV[13] n, the number of limits; then five values each: 'c', the limit's name, its most
--          slots, '', its JSON as the worker read it; or 'r', its name, the spacing between
--          starts (µs), the burst, its JSON
--
-- Concurrency: a job holds a slot (`<group> <entry ID>` scored by when its lease ends) while it
-- runs; the worker extends it with the job's lease and releases it at the job's end
-- (release.lua), handing it to the first waiter. A job already holding its slot (handed to it,
-- or held by a crashed worker's delivery of the same entry) keeps it. A job finding none waits in
-- the limit's first-come list and is due again when a slot is handed to it, or at the earliest
-- time a held slot's lease could end (at most a lease away), in case its holder crashed.
-- Rate: GCRA on the limit's theoretical arrival time; a job over it is given the next start
-- time (reserved for it, so a backlog drains at the rate without every waiter coming back at
-- once) and starts when it comes back. Concurrency is decided first: a job waiting for a slot
-- spends no rate. Returns {'run'}, {'wait', limit name, due ms}, {'lost'} when this consumer
-- no longer owns the entry, or {'stale'} (nothing written) when a limit the worker passed was
-- changed or removed since it read them: it reads them again and asks again, so a change
-- decides at once for the jobs `ferry limit set` woke.
-- ferry:prelude
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return {'lost'}
end
local n = tonumber(ARGV[13])
for i = 0, n - 1 do
  local at = 14 + i * 5
  if redis.call('HGET', KEYS[5], ARGV[at + 1]) ~= ARGV[at + 4] then
    return {'stale'}
  end
end
local time = redis.call('TIME')
local now_us = tonumber(time[1]) * 1000000 + tonumber(time[2])
local now = math.floor(now_us / 1000)
local member = ARGV[1] .. ' ' .. ARGV[3]
local lease = tonumber(ARGV[6])
local first_key = ARGV[8] == '1' and 7 or 6
local refused, due
local takes = {}

for i = 0, n - 1 do
  local at = 14 + i * 5
  if ARGV[at] == 'c' then
    local slots, waiting = KEYS[first_key + i * 2], KEYS[first_key + i * 2 + 1]
    hand_off(slots, waiting, tonumber(ARGV[at + 2]), now, lease, ARGV[12])
    if not redis.call('ZSCORE', slots, member) then
      if redis.call('ZCARD', slots) >= tonumber(ARGV[at + 2]) then
        -- First come, first served: by the entry's time, and its sequence within the millisecond.
        local ms, seq = string.match(ARGV[3], '^(%d+)-(%d+)$')
        redis.call('ZADD', waiting, 'NX', tonumber(ms) * 1000 + math.min(tonumber(seq), 999), member)
        outlive(waiting, lease * 3)
        local earliest = redis.call('ZRANGE', slots, 0, 0, 'WITHSCORES')[2]
        refused = ARGV[at + 1]
        due = math.min(tonumber(earliest or now) + 1, now + lease)
        break
      end
    end
    takes[#takes + 1] = { 'slot', slots, waiting }
  end
end

if not refused then
  for i = 0, n - 1 do
    local at = 14 + i * 5
    if ARGV[at] == 'r' then
      local arrival, reserved = KEYS[first_key + i * 2], KEYS[first_key + i * 2 + 1]
      local given = redis.call('HGET', reserved, member)
      if given then
        given = tonumber(given)
        if given > now_us + 1000 then
          refused, due = ARGV[at + 1], math.ceil(given / 1000)
          break
        end
        takes[#takes + 1] = { 'given', reserved }
      else
        local spacing, burst = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
        local tat = math.max(tonumber(redis.call('GET', arrival) or '0'), now_us)
        local start = tat - (burst - 1) * spacing
        if start <= now_us then
          takes[#takes + 1] = { 'rate', arrival, tat + spacing }
        else
          -- The next start time is this job's: the arrival time moves on as if it had started.
          redis.call('SET', arrival, string.format('%.0f', tat + spacing), 'PX',
            math.ceil((tat + spacing - now_us) / 1000) + 1000)
          redis.call('HSET', reserved, member, string.format('%.0f', start))
          outlive(reserved, math.ceil((start - now_us) / 1000) + lease * 3)
          refused, due = ARGV[at + 1], math.ceil(start / 1000)
          break
        end
      end
    end
  end
end

local status = ARGV[8] == '1' and KEYS[6] or nil
local from = ARGV[5] == '1' and 'none' or nil
local attempt = tonumber(ARGV[4])
if refused then
  park_entry(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[3], due, attempt - 1, tonumber(ARGV[7]), now)
  if status then
    set_status(status, ARGV[9], ARGV[1], ARGV[10], ARGV[3], 'waiting', now, 0,
      { 'attempts', attempt - 1, 'waiting_for', refused, 'next_attempt_at', due }, { 'type', ARGV[11] }, from)
  end
  return {'wait', refused, due}
end

for _, take in ipairs(takes) do
  if take[1] == 'slot' then
    redis.call('ZADD', take[2], now + lease, member)
    outlive(take[2], lease * 2)
    redis.call('ZREM', take[3], member)
  elseif take[1] == 'given' then
    redis.call('HDEL', take[2], member)
  else
    redis.call('SET', take[2], string.format('%.0f', take[3]), 'PX', math.ceil((take[3] - now_us) / 1000) + 1000)
  end
end
if status then
  local fields = { 'attempts', attempt, 'consumer', ARGV[2], 'started_at', now }
  if not from then
    fields[#fields + 1] = 'next_attempt_at'
    fields[#fields + 1] = ''
    fields[#fields + 1] = 'waiting_for'
    fields[#fields + 1] = ''
  end
  set_status(status, ARGV[9], ARGV[1], ARGV[10], ARGV[3], 'running', now, 0, fields, { 'type', ARGV[11] }, from)
end
return {'run'}
