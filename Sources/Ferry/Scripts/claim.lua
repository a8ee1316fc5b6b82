-- Ferry: claim entries whose lease ran out (their worker crashed or froze), and clear deleted ones.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the idle time (ms) an entry must have reached to be claimed: the lease
-- ARGV[4..] entry IDs
--
-- XCLAIM's min-idle makes the check and the claim one step, so two workers never both claim a
-- delivery. A failed job is not here: it left the pending list for the group's later
-- deliveries (delay.lua). XCLAIM (Redis 7) drops an entry that was deleted from the stream while
-- pending (trimmed, XDEL) from the pending list and returns nothing for it: such IDs are
-- returned separately so the worker can count and log them.
-- Returns { claimed entries as XCLAIM replies them, deleted IDs }.
-- ferry:function-flags allow-oom
local claimed, deleted = {}, {}
for i = 4, #ARGV do
  local reply = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[i])
  if reply[1] then
    claimed[#claimed + 1] = reply[1]
  elseif #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 0 then
    deleted[#deleted + 1] = ARGV[i]
  end
end
return { claimed, deleted }
