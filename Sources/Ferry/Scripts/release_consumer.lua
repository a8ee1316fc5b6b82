-- Ferry: delete this consumer from its group if, and only if, it holds no pending entry.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
--
-- A consumer that still holds entries is never deleted: XGROUP DELCONSUMER would drop its
-- pending entries, and nobody could reclaim them. Returns 1 when deleted, 0 otherwise.
-- ferry:function-flags allow-oom
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #pending > 0 then
  return 0
end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
