-- Ferry: record jobs whose stream entries someone deleted (XDEL, XTRIM) before they finished.
--
-- KEYS      the jobs' status hashes  ferry:{Q}:job:<job_id>
-- ARGV[1]   now, in milliseconds since the epoch
-- ARGV[2]   how long a finished job's status hash lives, in milliseconds
-- ARGV[3..] each job's entry ID, in the order of KEYS
--
-- The entry's fields are gone, so there is nothing to retry or dead-letter: the status says
-- 'deleted', a terminal state, and expires like any finished job's. A status hash that does not
-- exist (status off, or a job whose id is not known here) is not created. Returns how many
-- statuses were written.
local written = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('HSET', KEYS[i], 'state', 'deleted', 'updated_at', ARGV[1], 'finished_at', ARGV[1], 'last_error',
      'the entry ' .. ARGV[i + 2] .. ' was deleted from the stream (XDEL or XTRIM) before the job finished')
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    written = written + 1
  end
end
return written
