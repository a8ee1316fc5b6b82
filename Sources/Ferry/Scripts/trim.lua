-- Ferry retention: trim job entries older than a maximum age, but never one that a consumer
-- group has not finished with.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  maximum age in milliseconds
-- ARGV[2]  the prefix of the groups' later deliveries  ferry:{Q}:delayed:
--
-- The cut-off is the lowest of: now minus the maximum age (Redis's clock), and for each group
-- its oldest pending entry, or where it has read up to when nothing is pending (entries after
-- that are not delivered yet), and its oldest entry parked for a later delivery (a retry, a
-- snooze, a `deliver_at`: `ferry:{Q}:delayed:<group>:entries`, scored by entry time). With no group at all nothing is trimmed: jobs published before
-- the first worker starts wait for it. XTRIM MINID removes only entries below the cut-off; the
-- '~' lets Redis stop at a macro-node boundary, which may keep a few more, never fewer.
-- Returns the number of entries removed.
-- ferry:function-flags allow-oom
-- ferry:prelude
local function lower(a, b)
  if id_before(a, b) then
    return a
  end
  return b
end

local groups = group_infos(KEYS[1])
if #groups == 0 then
  return 0
end
local cutoff = string.format('%.0f-0', math.max(now_ms() - tonumber(ARGV[1]), 0))
for _, info in ipairs(groups) do
  local keep_from = info['last-delivered-id']
  if tonumber(info['pending']) > 0 then
    keep_from = redis.call('XPENDING', KEYS[1], info['name'])[2]
  end
  cutoff = lower(cutoff, keep_from)
  local parked = redis.call('ZRANGE', ARGV[2] .. info['name'] .. ':entries', 0, 0)
  if parked[1] then
    cutoff = lower(cutoff, parked[1])
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', '~', cutoff)
