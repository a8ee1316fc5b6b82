-- Ferry idempotency guard: keep the in-flight locks of running jobs alive with their leases.
--
-- KEYS      in-flight locks    ferry:{Q}:idem:lock:<key>, one per running job with a key
-- ARGV[1]   the locks' time to live in milliseconds (the lease)
-- ARGV[2..] each lock's token (its entry ID), in the order of KEYS
--
-- A lock is extended only while it still holds its entry's token. Returns how many were.
local extended = 0
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    extended = extended + 1
  end
end
return extended
