-- Ferry: claim idle entries whose lease and backoff are over, and clear deleted ones.
--
-- KEYS[1]  the job stream            ferry:{Q}:jobs
-- KEYS[2]  the earliest-retry hash   ferry:{Q}:retry_after
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3..] pairs: entry ID, the idle time (ms) the entry must have reached to be claimed
--
-- Each entry's required idle time is its lease plus the backoff for its delivery count, which
-- the worker computes; XCLAIM's min-idle makes the check and the claim one step, so two workers
-- never both claim a delivery. An entry whose earliest retry time (retry.lua) is still ahead
-- is left alone. XCLAIM (Redis 7) drops an entry that was deleted from the stream while pending
-- (trimmed, XDEL) from the pending list and returns nothing for it: such IDs are returned
-- separately so the worker can count and log them.
-- Returns { claimed entries as XCLAIM replies them, deleted IDs }.
-- ferry:prelude
local now = now_ms()
local claimed, deleted = {}, {}
for i = 3, #ARGV, 2 do
  local field = ARGV[i] .. ' ' .. ARGV[1]
  local notBefore = tonumber(redis.call('HGET', KEYS[2], field) or '0')
  if notBefore <= now then
    local reply = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[i + 1], ARGV[i])
    if reply[1] then
      claimed[#claimed + 1] = reply[1]
      redis.call('HDEL', KEYS[2], field)
    elseif #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 0 then
      deleted[#deleted + 1] = ARGV[i]
      redis.call('HDEL', KEYS[2], field)
    end
  end
end
return { claimed, deleted }
