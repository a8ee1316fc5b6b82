-- Ferry: a limit was changed or removed (`ferry limit set|delete`): every job waiting on the
-- given keys is made due now, so the new setting decides for it at once, and a rate's arrival
-- time and start times given to waiting jobs are dropped (the new rate starts afresh).
--
-- KEYS     a limit's :waiting (sorted set) and :reserved (hash) keys, and :tat keys
-- ARGV[1]  the prefix of the groups' later deliveries ferry:{Q}:delayed:
--
-- Running jobs keep their slots (:slots is left alone) and release them as they end.
-- Returns how many waiting jobs were woken.
-- ferry:function-flags allow-oom
-- ferry:prelude
local now = now_ms()
local woken = 0
local function wake(holder)
  local group, id = string.match(holder, '^(.*) (%S+)$')
  if group and redis.call('ZSCORE', ARGV[1] .. group, id) then
    redis.call('ZADD', ARGV[1] .. group, now, id)
    woken = woken + 1
  end
end
for _, key in ipairs(KEYS) do
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'zset' then
    for _, holder in ipairs(redis.call('ZRANGE', key, 0, -1)) do wake(holder) end
  elseif kind == 'hash' then
    for _, holder in ipairs(redis.call('HKEYS', key)) do wake(holder) end
  end
  redis.call('DEL', key)
end
return woken
