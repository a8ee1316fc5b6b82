-- Ferry: fail the workflows whose deadline has passed (any worker, about every second).
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  how long a failed workflow is kept, ms
-- ARGV[2]  how many at most in this call
--
-- Due means at or before Redis's clock (ferry:{Q}:wf:deadlines, id -> deadline ms). Each one still
-- running or blocked fails with the reason "its deadline passed", its queued steps asked to
-- cancel, in the same step as it leaves the deadlines. Returns the ids failed.
-- ferry:function-flags allow-oom
-- ferry:prelude
-- ferry:workflow
local now = now_ms()
local deadlines = key_prefix_of(KEYS[1]) .. ':wf:deadlines'
local failed = {}
for _, id in ipairs(redis.call('ZRANGE', deadlines, '-inf', now, 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))) do
  local wf = key_prefix_of(KEYS[1]) .. ':wf:' .. id
  local state = redis.call('HGET', wf, 'state')
  if state == 'running' or state == 'blocked' then
    redis.call('HSET', wf, 'reason', 'its deadline passed')
    workflow_cancel_steps(KEYS[1], wf, now)
    workflow_set_state(KEYS[1], wf, id, 'failed', now, ARGV[1])
    workflow_event(wf, 'failed', '', 'its deadline passed', now)
    failed[#failed + 1] = id
  end
  redis.call('ZREM', deadlines, id)
end
return failed
