-- Ferry: cancel a workflow, or resume a blocked one (ferry workflow cancel / resume).
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- KEYS[2]  the workflow    ferry:{Q}:wf:<id>
-- ARGV[1]  'cancel' or 'resume'
-- ARGV[2]  the workflow id
-- ARGV[3]  resume: the step to run from ('' for where it stopped)
-- ARGV[4]  how long a succeeded workflow is kept, ms
-- ARGV[5]  how long a failed or cancelled one is kept, ms
--
-- Cancel: its queued steps are asked to cancel (a worker acknowledges them unrun, or cancels them
-- running), waiting ones never start, and it ends `cancelled`. Resume: a blocked workflow runs
-- again from the named step (run again, with every step after it), or where it stopped: the
-- blocked step run again when it was dead-lettered, its successors when its handler blocked.
-- Returns {'ok'}, {'missing'}, {'ended', state}, {'not_blocked', state} or {'unknown_step', name}.
-- ferry:function-flags allow-oom
-- ferry:prelude
-- ferry:workflow
local state = redis.call('HGET', KEYS[2], 'state')
if not state then
  return {'missing'}
end
local now = now_ms()
if ARGV[1] == 'cancel' then
  if state == 'succeeded' or state == 'failed' or state == 'cancelled' then
    return {'ended', state}
  end
  workflow_cancel_steps(KEYS[1], KEYS[2], now)
  redis.call('HSET', KEYS[2], 'reason', 'cancelled on request')
  workflow_set_state(KEYS[1], KEYS[2], ARGV[2], 'cancelled', now, ARGV[5])
  workflow_event(KEYS[2], 'cancelled', '', 'on request', now)
  return {'ok'}
end
if state ~= 'blocked' then
  return {'not_blocked', state}
end
if ARGV[3] ~= '' and redis.call('HEXISTS', KEYS[2], 'step.' .. ARGV[3]) == 0 then
  return {'unknown_step', ARGV[3]}
end
local at = redis.call('HGET', KEYS[2], 'at_step')
redis.call('HDEL', KEYS[2], 'reason', 'at_step')
workflow_set_state(KEYS[1], KEYS[2], ARGV[2], 'running', now, 0)
workflow_event(KEYS[2], 'resumed', ARGV[3] ~= '' and ARGV[3] or at, '', now)
if ARGV[3] ~= '' then
  workflow_rerun(KEYS[1], KEYS[2], ARGV[2], ARGV[3], nil, true)
elseif redis.call('HGET', KEYS[2], 's.' .. at .. '.state') == 'dead' then
  workflow_rerun(KEYS[1], KEYS[2], ARGV[2], at, nil, true)
else
  workflow_advance(KEYS[1], KEYS[2], ARGV[2], at, workflow_spec(KEYS[2], at), now, ARGV[4])
end
return {'ok'}
