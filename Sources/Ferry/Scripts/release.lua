-- Ferry: a job that held concurrency slots has ended (its outcome is written): free them and
-- hand each to the first job waiting for it (hand_off in the prelude).
--
-- KEYS     for each slot held, the limit's :slots and :waiting (QueueKeys.limitState)
-- ARGV[1]  the lease, ms: how long a slot handed to a waiter is held for it
-- ARGV[2]  the prefix of the groups' later deliveries ferry:{Q}:delayed:
-- ARGV[3]  the releasing worker's group
-- ARGV[4..] for each slot held, two values: the holder (`<group> <entry ID>`) and the limit's
--          most slots
--
-- Returns how many slots went to waiters of the releasing worker's group, which it then looks
-- for at once instead of at its next quarter-second check.
-- ferry:prelude
local now = now_ms()
local lease = tonumber(ARGV[1])
local own = 0
for i = 1, #KEYS, 2 do
  local at = 4 + (i - 1)
  redis.call('ZREM', KEYS[i], ARGV[at])
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then
    own = own + hand_off(KEYS[i], KEYS[i + 1], tonumber(ARGV[at + 1]), now, lease, ARGV[2], ARGV[3])
  end
end
return own
