-- Ferry: extend the concurrency slots of running jobs with their leases (lease.lua extends the
-- entries), so a slot outlives its holder by at most a lease.
--
-- KEYS     the limits' :slots keys, one per slot held
-- ARGV[1]  the lease, ms
-- ARGV[2..] the holder of each (`<group> <entry ID>`), in KEYS' order
--
-- XX: a slot that is gone (its lease ended while its worker was cut off, and it was freed) is
-- not taken back, which could put the limit over. Returns how many were extended.
-- ferry:prelude
local lease = tonumber(ARGV[1])
local ends = now_ms() + lease
local extended = 0
for i, key in ipairs(KEYS) do
  extended = extended + redis.call('ZADD', key, 'XX', 'CH', ends, ARGV[i + 1])
  outlive(key, lease * 2 + 3600000)
end
return extended
