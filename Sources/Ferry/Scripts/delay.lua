-- Ferry: park a delivered entry until a later time, for this consumer group only: a retry after
-- a backoff, a snooze, or an entry read before its `deliver_at`.
--
-- KEYS[1]  the job stream                       ferry:{Q}:jobs
-- KEYS[2]  the group's later deliveries         ferry:{Q}:delayed:<group> (entry ID -> due, ms)
-- KEYS[3]  the attempts they carry              ferry:{Q}:delayed:<group>:attempts (entry ID -> n)
-- KEYS[4]  the entries they keep in the stream  ferry:{Q}:delayed:<group>:entries (entry ID -> its ms)
-- then     the job's status hash ferry:{Q}:job:<job_id>, when ARGV[9] is '1'
-- then     the delivery's idempotency lock ferry:{Q}:idem:lock:<key>, when ARGV[10] is not ''
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4]  when it is due: ms since the epoch, or '+<ms>' for that long after now (Redis's clock)
-- ARGV[5]  the delivery attempts it has spent, which its next delivery goes on from
-- ARGV[6]  '1' to park it only when the due time is still ahead (deliver_at); else park anyway
-- ARGV[7]  how long the keys outlive the due time if no worker hands it back, ms
-- ARGV[8]  the status state: 'retrying' (next_attempt_at) or 'scheduled' (deliver_at)
-- ARGV[9]  '1' when the status hash is given
-- ARGV[10] the lock's token ('' for none): the lock is released when this delivery holds it
-- ARGV[11..14] (with the status) the index prefix ferry:{Q}:idx:, the job id, the group's state
--          before ('running', 'none', or '' to read it), and the job's type ('' to leave it)
-- ARGV[15..] (with the status) the group's other status fields and values
--
-- The entry is acknowledged in its group, so it leaves the pending list (no reclaim scan pays
-- for it) and no other group sees anything; it stays in the stream, which the retention pass
-- keeps from KEYS[4]'s oldest entry. A worker hands it back when due (redeliver.lua), with the
-- attempt count carried. Returns {'parked', due}; {'due'} when ARGV[6] is '1' and the time has
-- come (nothing is written: run it now); {'lost'} when this consumer no longer owns the entry.
-- ferry:function-flags allow-oom
-- ferry:prelude
local record, lane = owned_lane(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
if not record then
  return {'lost'}
end
local now = now_ms()
local due
if string.sub(ARGV[4], 1, 1) == '+' then
  due = now + tonumber(string.sub(ARGV[4], 2))
else
  due = tonumber(ARGV[4])
end
if ARGV[6] == '1' and due <= now then
  return {'due'}
end
park_entry(lane, KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[3], due, ARGV[5], tonumber(ARGV[7]), now)
local next_key = 5
if ARGV[9] == '1' then
  local state = 'retrying'
  if ARGV[8] == 'scheduled' then
    state = 'scheduled'
  end
  local fields = {}
  for i = 15, #ARGV do
    fields[#fields + 1] = ARGV[i]
  end
  fields[#fields + 1] = state == 'scheduled' and 'deliver_at' or 'next_attempt_at'
  fields[#fields + 1] = due
  local from = ARGV[13] ~= '' and ARGV[13] or nil
  local shared = ARGV[14] ~= '' and { 'type', ARGV[14] } or nil
  set_status(KEYS[next_key], ARGV[11], ARGV[1], ARGV[12], ARGV[3], state, now, 0, fields, shared, from)
  next_key = next_key + 1
end
if ARGV[10] ~= '' and redis.call('GET', KEYS[next_key]) == ARGV[10] then
  redis.call('DEL', KEYS[next_key])
end
return {'parked', due}
