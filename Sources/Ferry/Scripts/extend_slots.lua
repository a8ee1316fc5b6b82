-- Ferry: extend this worker's concurrency slots with its running jobs' leases (lease.lua extends
-- the entries), so its slots outlive it by at most a lease.
--
-- KEYS     the :holders keys of the limit states where the worker holds slots
-- ARGV[1]  the lease, ms
-- ARGV[2..] for each key, the name the slots are counted under there (Worker.slotHolder: the
--           consumer's name, or `<consumer>#<n>`; a key appears once per name)
--
-- XX: slots freed as lapsed (the worker was cut off longer than its lease) are not taken back,
-- which could put the limit over. Returns how many were extended.
-- ferry:function-flags allow-oom
-- ferry:prelude
local lease = tonumber(ARGV[1])
local ends = now_ms() + lease
local extended = 0
for i, key in ipairs(KEYS) do
  extended = extended + redis.call('ZADD', key, 'XX', 'CH', ends, ARGV[i + 1])
  outlive(key, lease * 2 + 3600000)
end
return extended
