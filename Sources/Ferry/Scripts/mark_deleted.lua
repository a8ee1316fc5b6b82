-- Ferry: record jobs whose stream entries someone deleted (XDEL, XTRIM) before they finished.
--
-- KEYS      the jobs' status hashes  ferry:{Q}:job:<job_id>
-- ARGV[1]   now, in milliseconds since the epoch
-- ARGV[2]   how long a deleted job's status stays, in milliseconds
-- ARGV[3]   the consumer group
-- ARGV[4]   the index prefix  ferry:{Q}:idx:
-- ARGV[5..] two values a job, in the order of KEYS: its entry ID and its job id
--
-- The entry's fields are gone, so there is nothing to retry or dead-letter: the group's status
-- says 'deleted', a terminal state, and expires like any finished job's. A status hash that does
-- not exist (status off, or a job whose id is not known here) is not created. Returns how many
-- statuses were written.
-- ferry:prelude
local written = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local at = 5 + (i - 1) * 2
    set_status(KEYS[i], ARGV[4], ARGV[3], ARGV[at + 1], ARGV[at], 'deleted', ARGV[1], ARGV[2],
      { 'finished_at', ARGV[1], 'retryable', '0', 'last_error',
        'the entry ' .. ARGV[at] .. ' was deleted from the stream (XDEL or XTRIM) before the job finished' })
    written = written + 1
  end
end
return written
