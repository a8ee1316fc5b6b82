-- Ferry: publish one job of a priority other than normal to its priority's lane, with or
-- without an idempotency key.
--
-- KEYS[1]  the job stream             ferry:{Q}:jobs (the lane's stream, ferry:{Q}:jobs:p<level>,
--          is beside it, under the same hash tag)
-- KEYS[2]  the publish dedup key      ferry:{Q}:idem:pub:<key>, when ARGV[1] is not ''
-- ARGV[1]  dedup window in milliseconds, or '' for a job without an idempotency key
-- ARGV[2]  the job id the producer chose, or '' to use the stream entry ID
-- ARGV[3..] the entry's fields and values, as for XADD: type <t> priority <p> ... v 1
--
-- The entry ID is above every ID of every lane of the queue (add_job in the prelude). Returns
-- {1, job_id, entry_id} when the job was added, or {0, first_job_id} when the key was already
-- published within the window; then nothing is written.
-- ferry:prelude
return publish_once(ARGV[1], KEYS[2], ARGV[2], function()
  return (add_job(KEYS[1], ARGV, 3, #ARGV))
end)
