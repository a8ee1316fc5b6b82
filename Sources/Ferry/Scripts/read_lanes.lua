-- Ferry: read new entries from a queue's priority lanes, most urgent first or in the order given,
-- without blocking.
--
-- KEYS[1]  the job stream      ferry:{Q}:jobs (the normal lane; the others are ferry:{Q}:jobs:p<level>)
-- KEYS[2]  the cancel requests ferry:{Q}:cancel_requests
-- KEYS[3]  the queue's lanes   ferry:{Q}:jobs:lanes
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  how many entries to read at most (the worker's free slots)
-- ARGV[4]  the levels in the order to read them, comma-separated (weighted), or '' for most
--          urgent first (strict); a lane not named (new since the worker looked) comes after, by level
--
-- The lanes are those the queue has now, so a lane published to a moment ago is read at once (its
-- group is made at its start if no worker of the group has read it yet). Each lane is read only
-- for what the lanes before it left: a worker with 4 free slots and 10 urgent jobs waiting takes
-- 4 urgent ones and nothing less urgent. Returns {{[stream, entries] as XREADGROUP replies them,
-- for each lane read from}, 1 when a job may have been asked to cancel (the cancel requests
-- exist), else 0, how many lanes other than normal the queue has}.
-- ferry:function-flags allow-oom
local levels = redis.call('SMEMBERS', KEYS[3])
local present = { ['5'] = true }
for _, level in ipairs(levels) do
  present[level] = true
end
local order = {}
for level in string.gmatch(ARGV[4], '%d') do
  if present[level] then
    order[#order + 1] = level
    present[level] = false
  end
end
local rest = {}
for level, unread in pairs(present) do
  if unread then
    rest[#rest + 1] = level
  end
end
table.sort(rest)
for _, level in ipairs(rest) do
  order[#order + 1] = level
end

local remaining = tonumber(ARGV[3])
local read = {}
for _, level in ipairs(order) do
  local stream = level == '5' and KEYS[1] or KEYS[1] .. ':p' .. level
  local call = { 'XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', remaining, 'STREAMS', stream, '>' }
  local reply = redis.pcall(unpack(call))
  if type(reply) == 'table' and reply.err and string.sub(reply.err, 1, 7) == 'NOGROUP' and level ~= '5' then
    redis.call('XGROUP', 'CREATE', stream, ARGV[1], '0', 'MKSTREAM')
    reply = redis.call(unpack(call))
  elseif type(reply) == 'table' and reply.err then
    return reply
  end
  if reply and reply[1] then
    read[#read + 1] = reply[1]
    remaining = remaining - #reply[1][2]
    if remaining <= 0 then
      break
    end
  end
end
return {read, redis.call('EXISTS', KEYS[2]), #levels}
