-- Ferry: `ferry ordering resume`: a key stopped by a dead-lettered job goes on with its next job.
--
-- KEYS[1]  the key's turn in the group      ferry:{Q}:order:<group>:<key>
-- KEYS[2]  the key's jobs waiting their turn ferry:{Q}:order:<group>:<key>:waiting
-- KEYS[3]  the queue's blocked keys          ferry:{Q}:order:blocked
-- ARGV[1]  the group's later deliveries      ferry:{Q}:delayed:<group>
-- ARGV[2]  the registry field '<group> <key as keys write it>'
--
-- Returns the entry ID of the dead-lettered job that had stopped the key, or false when the key
-- was not blocked.
-- ferry:function-flags allow-oom
-- ferry:prelude
local blocked = redis.call('HGET', KEYS[1], 'blocked')
redis.call('HDEL', KEYS[3], ARGV[2])
if not blocked then
  return false
end
redis.call('HDEL', KEYS[1], 'owner', 'blocked', 'blocked_at', 'ending')
wake_next_in_order(KEYS[2], ARGV[1])
return blocked
