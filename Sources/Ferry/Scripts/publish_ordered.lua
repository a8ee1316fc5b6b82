-- Ferry wire format v1: publish one job with an ordering key, listing it in its key's published
-- jobs so every group runs the key's jobs in publish order, whichever worker reads which.
--
-- KEYS[1]  the job stream                ferry:{Q}:jobs
-- KEYS[2]  the key's published jobs      ferry:{Q}:ordered:<key> (key as ids are written in keys)
-- KEYS[3]  the publish dedup key         ferry:{Q}:idem:pub:<idempotency key>, when ARGV[1] is not ''
-- ARGV[1]  the dedup window in milliseconds, or '' for a job without an idempotency key
-- ARGV[2]  the job id the producer chose, or '' to use the stream entry ID
-- ARGV[3]  the prefix of the groups' later deliveries ferry:{Q}:delayed:
-- ARGV[4..] the entry's fields and values, as for XADD: type <t> ordering_key <k> ... v 1
--
-- Returns {1, job_id, entry_id} when the job was added, or {0, first_job_id} when the idempotency
-- key was already published within the window; then nothing is written.
-- ferry:prelude
return publish_once(ARGV[1], KEYS[3], ARGV[2], function()
  local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
  register_ordered(KEYS[1], KEYS[2], entry_id, ARGV[3])
  return entry_id
end)
