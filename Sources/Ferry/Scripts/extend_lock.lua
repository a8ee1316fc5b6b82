-- Ferry idempotency guard: keep the in-flight locks of running jobs alive with their leases.
--
-- KEYS      in-flight locks    ferry:{Q}:idem:lock:<key>, one per running job with a key
-- ARGV[1]   the locks' time to live in milliseconds (two leases and 2 s)
-- ARGV[2..] each lock's token (from begin.lua), in the order of KEYS
--
-- A lock is extended only while it still holds its delivery's token. Returns the tokens of the
-- locks that were, so the worker knows which of its jobs may go on running.
-- ferry:function-flags allow-oom
local extended = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    extended[#extended + 1] = ARGV[i + 1]
  end
end
return extended
