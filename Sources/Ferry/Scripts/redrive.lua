-- Ferry: put one dead-lettered job back on its queue, atomically.
--
-- KEYS[1]  the job stream          ferry:{Q}:jobs
-- KEYS[2]  the dead-letter stream  ferry:{Q}:dead
-- KEYS[3]  the job's status hash   ferry:{Q}:job:<job_id>
-- ARGV[1]  the dead-letter entry ID
-- ARGV[2]  now, in ms since the epoch
-- ARGV[3]  the index prefix  ferry:{Q}:idx:
-- ARGV[4]  the job id
--
-- The original fields go back on the job stream, in the lane of their priority (a new entry: a fresh delivery count), without
-- the dead_letter.* fields, with job_id set to the original entry ID when the job had none so
-- its id survives, and with redrive_group naming the group that dead-lettered it: only that
-- group runs it again; workers of other groups, which already ran it, acknowledge it unrun.
-- The dead-letter entry is deleted in the same step, so a redrive run twice, or killed
-- half-way, never duplicates or loses a job. The status hash, if any, shows `queued` again for
-- the group that dead-lettered it (and the job leaves that group's index of dead jobs).
-- Returns the new entry ID, or false when the dead-letter entry no longer exists.
-- ferry:prelude
local found = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[1])
if not found[1] then
  return false
end
local flat = found[1][2]
local sourceID, sourceGroup = nil, nil
for i = 1, #flat, 2 do
  if flat[i] == 'dead_letter.source_id' then
    sourceID = flat[i + 1]
  elseif flat[i] == 'dead_letter.source_group' then
    sourceGroup = flat[i + 1]
  end
end
local id = add_again(KEYS[1], flat, sourceID, sourceGroup)
redis.call('XDEL', KEYS[2], ARGV[1])
if sourceGroup and redis.call('EXISTS', KEYS[3]) == 1 then
  set_status(KEYS[3], ARGV[3], sourceGroup, ARGV[4], id, 'queued', ARGV[2], 0,
    { 'redriven_at', ARGV[2], 'dead_id', '', 'next_attempt_at', '' })
end
return id
