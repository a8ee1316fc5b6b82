-- Ferry: hand this consumer the group's parked entries that are due (delay.lua parked them).
--
-- KEYS[1]  the job stream                       ferry:{Q}:jobs (other lanes are looked in too)
-- KEYS[2]  the group's later deliveries         ferry:{Q}:delayed:<group> (entry ID -> due, ms)
-- KEYS[3]  the attempts they carry              ferry:{Q}:delayed:<group>:attempts
-- KEYS[4]  the entries they keep in the stream  ferry:{Q}:delayed:<group>:entries
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  how many to take at most (the worker's free slots)
--
-- Due means at or before Redis's clock. XCLAIM ... FORCE puts the acknowledged entry back in the
-- group's pending list, owned by this consumer, and RETRYCOUNT sets its delivery count to the
-- attempt it now makes (the attempts it carried, plus one), so from here on it is an ordinary
-- delivery: a crash of this worker is a lease expiry like any other. It leaves the three keys
-- in the same step, so two workers never both take it. An entry deleted from the stream
-- meanwhile (XDEL, a producer's MAXLEN) is not claimed and is returned apart.
-- Returns {entries as XCLAIM replies them, their attempt numbers, deleted IDs, 1 when more are
-- due, else 0}.
-- ferry:function-flags allow-oom
-- ferry:prelude
local limit = tonumber(ARGV[3])
local due = redis.call('ZRANGE', KEYS[2], '-inf', now_ms(), 'BYSCORE', 'LIMIT', 0, limit)
local claimed, attempts, deleted = {}, {}, {}
local lanes  -- the queue's other lanes, read once the first entry is not in the normal one
for _, id in ipairs(due) do
  local attempt = tonumber(redis.call('HGET', KEYS[3], id) or '0') + 1
  local reply = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'FORCE', 'RETRYCOUNT', attempt)
  if not reply[1] then
    lanes = lanes or lane_streams(KEYS[1])
    for i = 2, #lanes do
      reply = redis.call('XCLAIM', lanes[i], ARGV[1], ARGV[2], 0, id, 'FORCE', 'RETRYCOUNT', attempt)
      if reply[1] then
        break
      end
    end
  end
  if reply[1] then
    claimed[#claimed + 1] = reply[1]
    attempts[#attempts + 1] = attempt
  else
    deleted[#deleted + 1] = id
  end
  redis.call('ZREM', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
end
return {claimed, attempts, deleted, #due == limit and 1 or 0}
