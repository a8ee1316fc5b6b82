-- Ferry: a workflow step's job succeeded or was cancelled: acknowledge it (only while this
-- consumer owns it), record its status, and move its workflow, in one step.
--
-- KEYS[1]  the job stream        ferry:{Q}:jobs (the entry may be in another priority's lane)
-- KEYS[2]  the job's status hash ferry:{Q}:job:<job_id>, when ARGV[9] is '1'
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  the job id
-- ARGV[5]  the outcome: succeeded, or cancelled (a cancel request)
-- ARGV[6]  the workflow id
-- ARGV[7]  the step's name
-- ARGV[8]  the index prefix  ferry:{Q}:idx:
-- ARGV[9]  '1' to record the job's status
-- ARGV[10] how long a succeeded job's status (and a succeeded workflow) is kept, ms
-- ARGV[11] how long a failed or cancelled one is kept, ms
-- ARGV[12] how long the handler ran, ms
-- ARGV[13] the handler's decision: '', block, fail or retry
-- ARGV[14] its detail: the reason, or for retry '<step> <delay ms>'
-- ARGV[15] '1' when the step has a result, which is ARGV[16]; '2' when it is large and goes by
--          reference: ARGV[16] the result, ARGV[17] its '<sha256> <size>'
--
-- Returns 1, or 0 when this consumer no longer owns the entry (nothing is written then).
-- ferry:function-flags allow-oom
-- ferry:prelude
-- ferry:workflow
local record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not record then
  return 0
end
redis.call('XACK', lane, ARGV[1], ARGV[3])
local now = now_ms()
if ARGV[9] == '1' then
  if ARGV[5] == 'succeeded' then
    set_status(KEYS[2], ARGV[8], ARGV[1], ARGV[4], ARGV[3], 'succeeded', now, ARGV[10],
      { 'progress', '100', 'finished_at', now, 'processing_ms', ARGV[12], 'retryable', '0' }, nil, 'running')
  else
    set_status(KEYS[2], ARGV[8], ARGV[1], ARGV[4], ARGV[3], 'cancelled', now, ARGV[11],
      { 'finished_at', now, 'retryable', '0' }, nil, 'running')
  end
end
workflow_step_ended(KEYS[1], ARGV[1], ARGV[6], ARGV[7], ARGV[4], ARGV[5], ARGV[15] ~= '0' and ARGV[16] or nil,
  ARGV[15] == '2' and ARGV[17] or nil, ARGV[13], ARGV[14], now, ARGV[10], ARGV[11])
return 1
