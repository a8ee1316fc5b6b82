-- Ferry: read new entries from a queue's priority lanes, in the order given, without blocking.
--
-- KEYS[1..n-2]  the lanes' streams in the order to read them (ferry:{Q}:jobs, ferry:{Q}:jobs:p<level>)
-- KEYS[n-1]     the cancel requests  ferry:{Q}:cancel_requests
-- KEYS[n]       the queue's lanes    ferry:{Q}:jobs:lanes
-- ARGV[1]       the consumer group
-- ARGV[2]       this consumer's name
-- ARGV[3]       how many entries to read at most (the worker's free slots)
--
-- Each lane is read only for what the lanes before it left: a worker with 4 free slots and 10
-- urgent jobs waiting takes 4 urgent ones and nothing less urgent. Returns {{[stream, entries]
-- as XREADGROUP replies them, for each lane read from}, 1 when a job may have been asked to
-- cancel (the cancel requests exist), else 0, how many lanes other than normal the queue has}.
local remaining = tonumber(ARGV[3])
local read = {}
for i = 1, #KEYS - 2 do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', remaining, 'STREAMS', KEYS[i], '>')
  if reply and reply[1] then
    read[#read + 1] = reply[1]
    remaining = remaining - #reply[1][2]
    if remaining <= 0 then
      break
    end
  end
end
return {read, redis.call('EXISTS', KEYS[#KEYS - 1]), redis.call('SCARD', KEYS[#KEYS])}
