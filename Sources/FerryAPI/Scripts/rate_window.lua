-- Ferry's HTTP API: may one more request of a client's route class pass its rate limit? At most
-- `count` requests in any window of `period`, exactly: the sorted set holds the times of the
-- requests the window still counts (docs/design.md, "The HTTP API"). One call per request;
-- every `ferry serve` shares the set, so the limit holds across processes.
--
-- KEYS[1]  the client's window   ferry:api:rate:<class>:<client>[:<queue>/<job_id>]
-- ARGV[1]  count: the requests a window allows
-- ARGV[2]  period, ms
-- ARGV[3]  this request's member (unique: two requests in one millisecond both count)
-- ARGV[4]  how many it counts for (a batch publish: its jobs), at most count
--
-- Returns {1, requests left in the window} when the request passes (and is counted), or
-- {0, ms until enough counted requests leave the window} when it does not (not counted: a
-- client retrying too soon does not push its own turn back). The set expires a period after
-- its newest request, so an idle client leaves nothing behind.
local count, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - period)
local weight = tonumber(ARGV[4]) or 1
local used = redis.call('ZCARD', KEYS[1])
if used + weight > count then
  -- Room comes when the (used + weight - count)th oldest leaves.
  local nth = redis.call('ZRANGE', KEYS[1], used + weight - count - 1, used + weight - count - 1, 'WITHSCORES')
  return {0, math.max(1, tonumber(nth[2]) + period - now)}
end
if weight == 1 then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
else
  local members = {}
  for i = 1, weight do
    members[#members + 1] = now
    members[#members + 1] = ARGV[3] .. ':' .. i
  end
  redis.call('ZADD', KEYS[1], unpack(members))
end
redis.call('PEXPIRE', KEYS[1], period)
return {1, count - used - weight}
