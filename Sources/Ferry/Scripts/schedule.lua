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
--
-- Self-contained (no shared prelude): ops/lua/schedule.lua is this file, for producers in other
-- languages, so it reads Redis's clock itself.
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
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
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
