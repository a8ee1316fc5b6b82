-- Ferry: ask for a job to be cancelled.
--
-- KEYS[1]  the job's status hash  ferry:{Q}:job:<job_id>
-- KEYS[2]  the cancel requests    ferry:{Q}:cancel_requests (sorted set: job id -> expiry, ms)
-- KEYS[3]  the due index          ferry:{Q}:scheduled
-- KEYS[4]  the job's fields while it is scheduled  ferry:{Q}:scheduled:<job_id>
-- ARGV[1]  now, in milliseconds since the epoch
-- ARGV[2]  how long the request is kept, in milliseconds
-- ARGV[3]  the job id
-- ARGV[4]  '1' to record the request for a job with no status yet (one still to be published,
--          or published without a status, as by a plain XADD); '0' to leave such a job alone
-- ARGV[5]  the prefix of the groups' later deliveries  ferry:{Q}:delayed:
-- ARGV[6]  the index prefix  ferry:{Q}:idx:
-- ARGV[7..] the queue's consumer groups
--
-- Adds the job id to the cancel requests, where workers look before running a read batch (a
-- requested job is then acknowledged as cancelled without running) and, for running jobs, with
-- every lease extension (the handler is cancelled); expired requests are trimmed here. The
-- status hash gets cancel_requested, for people reading it. A group with no state of its own in
-- the hash has not started the job ('queued'; a hash written before data format 2 has one
-- state for every group), unless its success is packed in its minute's hash (data format 3).
-- Returns the job's state before the request: when every group has finished it ('succeeded',
-- 'dead', 'cancelled', 'deleted') the job is left alone and the first group's state is
-- returned; otherwise the first state of a group that has not finished. 'unknown' means the
-- job has no status (nothing is written unless ARGV[4] is '1'). A job still scheduled leaves
-- the due index with its fields and never runs; its status says 'cancelled' for every group,
-- and 'scheduled' is returned. A group that parked the job for later (a retry, a snooze, an
-- early `deliver_at`, a wait for a limit: ferry:{Q}:delayed:<group>) has it taken out and
-- recorded 'cancelled' at once; only groups still to run it need the request.
-- ferry:function-flags allow-oom
-- ferry:prelude
if redis.call('ZREM', KEYS[3], string.match(KEYS[4], '}:scheduled:(.*)$')) == 1 then
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancel_requested', ARGV[1], 'finished_at', ARGV[1], 'job_id', ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'scheduled'
end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if not exists and ARGV[4] ~= '1' then
  return 'unknown'
end
local answer
local requested = false
if exists then
  local shared = redis.call('HGET', KEYS[1], 'state') or 'queued'
  local entry_id = redis.call('HGET', KEYS[1], 'entry_id')
  local finished
  for i = 7, #ARGV do
    local group = ARGV[i]
    local state = redis.call('HGET', KEYS[1], group .. '.state')
    if not state and packed_succeeded(ARGV[6], group, entry_id or ARGV[3]) then
      state = 'succeeded'
    end
    state = state or shared
    local parked = ARGV[5] .. group
    if (state == 'retrying' or state == 'scheduled' or state == 'waiting') and entry_id and redis.call('ZREM', parked, entry_id) == 1 then
      redis.call('HDEL', parked .. ':attempts', entry_id)
      redis.call('ZREM', parked .. ':entries', entry_id)
      set_status(KEYS[1], ARGV[6], group, ARGV[3], entry_id, 'cancelled', ARGV[1], ARGV[2],
        { 'finished_at', ARGV[1], 'retryable', '0', 'next_attempt_at', '' }, nil, state)
      answer = answer or state
    elseif not is_terminal(state) then
      answer = answer or state
      requested = true
    else
      finished = finished or state
    end
  end
  if #ARGV < 7 then
    if is_terminal(shared) then
      return shared
    end
    answer = shared
    requested = true
  end
  if not answer then
    return finished
  end
  if not requested then
    redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[1], 'updated_at', ARGV[1])
    return answer
  end
end
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[3])
redis.call('HSET', KEYS[1], 'cancel_requested', ARGV[1], 'updated_at', ARGV[1], 'job_id', ARGV[3])
if not exists then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 'unknown'
end
return answer
