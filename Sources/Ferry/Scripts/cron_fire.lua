-- Ferry: enqueue a cron schedule's due ticks, exactly once, and move it to its next tick.
--
-- KEYS[1]  the queue's schedule index  ferry:{Q}:cron (sorted set: name -> next tick, ms)
-- KEYS[2]  the schedule                ferry:{Q}:cron:<name> (hash)
-- KEYS[3]  the job stream              ferry:{Q}:jobs
-- ARGV[1]  the schedule's name
-- ARGV[2]  the tick the caller found due (its score in KEYS[1]): the compare in compare-and-set
-- ARGV[3]  the next tick after now, ms, or '' when the schedule never ticks again
-- ARGV[4]  the prefix of the groups' later deliveries  ferry:{Q}:delayed:
-- ARGV[5]  the status key prefix ferry:{Q}:job:, or '' when no status is kept
-- ARGV[6]  how long a queued status lives if no worker runs the job, ms
-- ARGV[7..] the ticks to enqueue, ms, oldest first (the caller applied the catch-up rule)
--
-- Whichever worker calls first with the schedule's current tick enqueues; any other finds the
-- index moved on and writes nothing, so each tick has one job however many workers look. A
-- tick's job id is cron-<name>-<tick ms>, its fields the schedule's `job.*` fields plus
-- attr.cron_schedule and attr.cron_tick. With overlap 'skip', no tick is enqueued while the last
-- tick's job is unread, pending or waiting for a retry in any group, and of several due at once
-- only the latest is (the skipped ticks are counted in `skipped`). Returns {'fired', job ids...}, {'overlap'} or {'moved'}.
-- ferry:prelude
local current = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not current or tonumber(current) ~= tonumber(ARGV[2]) then
  return {'moved'}
end
local function advance()
  if ARGV[3] == '' then
    redis.call('ZREM', KEYS[1], ARGV[1])
  else
    redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  end
  redis.call('HSET', KEYS[2], 'next_at', ARGV[3])
end

local schedule = redis.call('HGETALL', KEYS[2])
local spec, fields = {}, {}
for i = 1, #schedule, 2 do
  local name, value = schedule[i], schedule[i + 1]
  spec[name] = value
  if string.sub(name, 1, 4) == 'job.' then
    fields[#fields + 1] = string.sub(name, 5)
    fields[#fields + 1] = value
  end
end
if spec['paused'] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return {'moved'}
end
-- The last tick's job is unfinished while its entry is in its lane and some group has yet to
-- finish it.
local last_lane = spec['last_lane'] or KEYS[3]
if spec['overlap'] == 'skip' and spec['last_entry_id']
    and #redis.call('XRANGE', last_lane, spec['last_entry_id'], spec['last_entry_id']) > 0
    and entry_unfinished(last_lane, spec['last_entry_id'], ARGV[4]) then
  redis.call('HINCRBY', KEYS[2], 'skipped', #ARGV - 6)
  advance()
  return {'overlap'}
end
local first = 7
if spec['overlap'] == 'skip' and #ARGV > 7 then
  -- Several ticks at once would overlap each other: the latest runs, the others are skipped.
  redis.call('HINCRBY', KEYS[2], 'skipped', #ARGV - 7)
  first = #ARGV
end
local now = now_ms()
local reply = {'fired'}
for i = first, #ARGV do
  local tick = ARGV[i]
  local job_id = 'cron-' .. ARGV[1] .. '-' .. tick
  local entry_fields = { 'job_id', job_id }
  for _, value in ipairs(fields) do
    entry_fields[#entry_fields + 1] = value
  end
  for _, value in ipairs({ 'attr.cron_schedule', ARGV[1], 'attr.cron_tick', tick, 'published_at', now }) do
    entry_fields[#entry_fields + 1] = value
  end
  local entry_id, lane = add_job(KEYS[3], entry_fields, 1, #entry_fields)
  if ARGV[5] ~= '' then
    local status = ARGV[5] .. job_id
    redis.call('HSET', status, 'queued_at', now, 'job_id', job_id, 'type', spec['job.type'] or '', 'entry_id', entry_id)
    redis.call('PEXPIRE', status, ARGV[6])
  end
  redis.call('HSET', KEYS[2], 'last_at', tick, 'last_job_id', job_id, 'last_entry_id', entry_id, 'last_lane', lane)
  reply[#reply + 1] = job_id
end
advance()
return reply
