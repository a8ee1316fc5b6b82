-- Ferry: run a cancelled job again for the group that cancelled it, atomically.
--
-- KEYS[1]  the job stream          ferry:{Q}:jobs
-- KEYS[2]  the job's status hash   ferry:{Q}:job:<job_id>
-- KEYS[3]  the cancel requests     ferry:{Q}:cancel_requests
-- ARGV[1]  the group
-- ARGV[2]  now, in ms since the epoch
-- ARGV[3]  the index prefix  ferry:{Q}:idx:
-- ARGV[4]  the job id
--
-- A job the group cancelled was acknowledged there, its entry kept in the stream until retention
-- trims it. Its fields go back on the stream as a new entry for that group only (add_again, as a
-- redrive does), the cancel request goes (or the new entry would be cancelled unrun), and the
-- group's status shows `queued` again. Returns {'queued', new entry ID}; {'state', the group's
-- state} when the group's job is not cancelled (nothing written; 'none' without a status);
-- {'gone', entry ID} when its entry was trimmed or deleted (its fields are no longer kept).
-- ferry:prelude
local current = redis.call('HMGET', KEYS[2], ARGV[1] .. '.state', 'entry_id')
if current[1] ~= 'cancelled' then
  return { 'state', current[1] or 'none' }
end
-- A job whose id is its entry ID may have no entry_id of its own (cancelled before it started).
local entry_id = current[2] or string.match(ARGV[4], '^%d+%-%d+$')
local found = entry_id and redis.call('XRANGE', KEYS[1], entry_id, entry_id) or {}
if not found[1] then
  return { 'gone', entry_id or '' }
end
local id = add_again(KEYS[1], found[1][2], entry_id, ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[4])
redis.call('HDEL', KEYS[2], 'cancel_requested')
set_status(KEYS[2], ARGV[3], ARGV[1], ARGV[4], id, 'queued', ARGV[2], 0,
  { 'redriven_at', ARGV[2], 'finished_at', '', 'retryable', '', 'next_attempt_at', '' }, nil, 'cancelled')
return { 'queued', id }
