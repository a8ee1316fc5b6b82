-- Ferry: acknowledge entries, but only those this consumer still owns, and record the jobs
-- that ran as succeeded.
--
-- KEYS[1]   the job stream  ferry:{Q}:jobs
-- KEYS[2..] status hashes  ferry:{Q}:job:<job_id> of jobs to record as succeeded
-- ARGV[1]   the consumer group
-- ARGV[2]   this consumer's name
-- ARGV[3]   now, in milliseconds since the epoch
-- ARGV[4]   how long a finished job's status hash lives, in milliseconds
-- ARGV[5..] triples: an entry ID, the index in KEYS of its status hash (0 for none), and how long
--           its handler ran, in milliseconds (processing_ms)
--
-- XACK alone acknowledges for the whole group: a worker that lost an entry's lease (a zombie
-- after a long pause) would ack the new owner's delivery, and its status would claim a success
-- the new owner has not had yet. Returns the IDs that were NOT acked because another consumer
-- owns them now (or they are no longer pending); their status is left alone.
-- ferry:prelude
local lost = {}
for i = 5, #ARGV, 3 do
  local id = ARGV[i]
  if owned(KEYS[1], ARGV[1], ARGV[2], id) then
    redis.call('XACK', KEYS[1], ARGV[1], id)
    local status = tonumber(ARGV[i + 1])
    if status > 0 then
      redis.call('HSET', KEYS[status], 'state', 'succeeded', 'progress', '100', 'finished_at', ARGV[3],
        'updated_at', ARGV[3], 'processing_ms', ARGV[i + 2], 'retryable', '0')
      redis.call('PEXPIRE', KEYS[status], ARGV[4])
    end
  else
    lost[#lost + 1] = id
  end
end
return lost
