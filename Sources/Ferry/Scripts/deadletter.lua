-- Ferry: move an entry to the dead-letter stream, acknowledge it and record it dead, atomically.
--
-- KEYS[1]  the job stream          ferry:{Q}:jobs
-- KEYS[2]  the dead-letter stream  ferry:{Q}:dead
-- KEYS[3]  (when job status is kept) the status hash ferry:{Q}:job:<job_id>
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  now, in milliseconds since the epoch
-- ARGV[5]  how long a dead job's status stays, in milliseconds
-- ARGV[6]  the index prefix  ferry:{Q}:idx:
-- ARGV[7]  the job id
-- ARGV[8]  the delivery attempt that failed
-- ARGV[9]  the error class
-- ARGV[10] the error, as the status keeps it
-- ARGV[11] how long the handler ran, in milliseconds, or '' when it did not run
-- ARGV[12] the delivery's idempotency lock token, or '' for none; with one, the last key is
--          the lock ferry:{Q}:idem:lock:<key>, released when this delivery holds it
-- ARGV[13..] dead_letter.* fields and values to add after the original fields
--
-- The original fields are copied from the stream itself, byte for byte, duplicates included.
-- If the XADD fails (Redis out of memory, say) the script stops before XACK: the entry stays
-- pending and is retried, never dropped. The status names the dead letter (`dead_id`), so it is
-- found by job id without reading the dead-letter stream. A workflow's step (the entry's
-- `workflow` and `step` fields) moves its workflow in the same step (workflow_step_ended). Other groups keep their own copy of
-- the job: like Pub/Sub, dead-lettering acts on one subscription. Returns the dead letter's
-- entry ID, or nil when this consumer no longer owns the entry (nothing is written then).
-- ferry:function-flags allow-oom
-- ferry:prelude
-- ferry:workflow
local record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not record then
  return false
end
local fields = {}
local entry = redis.call('XRANGE', lane, ARGV[3], ARGV[3])
if entry[1] then
  for _, value in ipairs(entry[1][2]) do
    fields[#fields + 1] = value
  end
end
for i = 13, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
local dead_id = redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', lane, ARGV[1], ARGV[3])
local status_key = KEYS[3]
if ARGV[12] ~= '' then
  -- The next delivery of the key (a redrive, another job) need not wait for the lock to lapse.
  if redis.call('GET', KEYS[#KEYS]) == ARGV[12] then
    redis.call('DEL', KEYS[#KEYS])
  end
  if #KEYS == 3 then
    status_key = nil
  end
end
if status_key then
  local status = { 'attempts', ARGV[8], 'consumer', ARGV[2], 'error_class', ARGV[9], 'last_error', ARGV[10],
    'finished_at', ARGV[4], 'retryable', '0', 'next_attempt_at', '', 'dead_id', dead_id }
  if ARGV[11] ~= '' then
    status[#status + 1] = 'processing_ms'
    status[#status + 1] = ARGV[11]
  end
  set_status(status_key, ARGV[6], ARGV[1], ARGV[7], ARGV[3], 'dead', ARGV[4], ARGV[5], status)
end
-- A workflow's step: its end moves its workflow in the same step (its `on_failure`).
local workflow, step = two_fields(fields, 1, #fields, 'workflow', 'step')
if workflow and step then
  workflow_step_ended(KEYS[1], ARGV[1], workflow, step, ARGV[7], 'dead', nil, nil, '', '', tonumber(ARGV[4]), ARGV[5],
    ARGV[5])
end
return dead_id
