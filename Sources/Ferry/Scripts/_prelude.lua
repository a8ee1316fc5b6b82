-- Ferry's shared script parts: the EmbedLuaScripts plugin puts this text where a script has the
-- line `-- ferry:prelude`, so the ownership check and Redis's clock are written once. Files
-- whose names start with `_` are parts, not scripts of their own.

-- The pending-list record of `id` in `group` when `consumer` owns it, else nil: the check
-- every transition of a delivered job makes first, so a worker that lost an entry (a zombie
-- after a long pause, a reclaim) cannot act for its new owner. The record is
-- {id, consumer, idle ms, deliveries}.
local function owned(stream, group, consumer, id)
  local pending = redis.call('XPENDING', stream, group, id, id, 1)
  if pending[1] and pending[1][2] == consumer then
    return pending[1]
  end
  return nil
end

-- Redis's clock in milliseconds since the epoch: the one clock every worker shares.
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
