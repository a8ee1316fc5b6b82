-- Ferry wire format v1: publish one job with an idempotency key, atomically.
--
-- KEYS[1]  the job stream             ferry:{Q}:jobs
-- KEYS[2]  the publish dedup key      ferry:{Q}:idem:pub:<key>
-- ARGV[1]  dedup window in milliseconds (how long the key is remembered)
-- ARGV[2]  the job id the producer chose, or '' to use the stream entry ID
-- ARGV[3..] the entry's fields and values, as for XADD: type <t> data <d> ... v 1
--
-- Returns {1, job_id, entry_id} when the job was added, or {0, first_job_id} when the key was
-- already published within the window; then nothing is written. Redis runs a script alone, so
-- concurrent publishes of one key from any number of processes add exactly one entry.
local first = redis.call('GET', KEYS[2])
if first then
  return {0, first}
end
local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
local job_id = ARGV[2]
if job_id == '' then
  job_id = entry_id
end
redis.call('SET', KEYS[2], job_id, 'PX', ARGV[1])
return {1, job_id, entry_id}
