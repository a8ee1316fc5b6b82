-- Ferry: record jobs whose stream entries someone deleted (XDEL, XTRIM) before they finished.
--
-- KEYS      the jobs' status hashes  ferry:{Q}:job:<job_id>
-- ARGV[1]   now, in milliseconds since the epoch
-- ARGV[2]   how long a deleted job's status stays, in milliseconds
-- ARGV[3]   the consumer group
-- ARGV[4]   the index prefix  ferry:{Q}:idx:
-- ARGV[5]   the job stream    ferry:{Q}:jobs
-- ARGV[6]   '1' to write the statuses
-- ARGV[7..] two values a job, in the order of KEYS: its entry ID and its job id
--
-- The entry's fields are gone, so there is nothing to retry or dead-letter: the group's status
-- says 'deleted', a terminal state, and expires like any finished job's. A status hash that does
-- not exist is not created (status off, or a job whose id is not known here), but for a job
-- whose id is its entry ID: its publish wrote none (publish_batch.lua). A workflow's step
-- (its job id `<workflow id>/<step>`, `#<run>`: both names are key-safe, so the id says which)
-- ends as dead-lettered for its workflow, whose `on_failure` decides: no workflow waits on a
-- step whose entry is gone. Returns how many statuses were written.
-- ferry:function-flags allow-oom
-- ferry:prelude
-- ferry:workflow
local written = 0
for i = 1, #KEYS do
  local at = 7 + (i - 1) * 2
  if ARGV[6] == '1' and (ARGV[at + 1] == ARGV[at] or redis.call('EXISTS', KEYS[i]) == 1) then
    set_status(KEYS[i], ARGV[4], ARGV[3], ARGV[at + 1], ARGV[at], 'deleted', ARGV[1], ARGV[2],
      { 'finished_at', ARGV[1], 'retryable', '0', 'last_error',
        'the entry ' .. ARGV[at] .. ' was deleted from the stream (XDEL or XTRIM) before the job finished' })
    written = written + 1
  end
  local workflow, step = string.match(ARGV[at + 1], '^([%w%._%-]+)/([%w%._%-]+)#?%d*$')
  if workflow then
    workflow_step_ended(ARGV[5], ARGV[3], workflow, step, ARGV[at + 1], 'dead', nil, nil, '', '', tonumber(ARGV[1]), ARGV[2],
      ARGV[2])
  end
end
return written
