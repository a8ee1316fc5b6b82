-- Ferry: acknowledge entries, but only those this consumer still owns.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3..] entry IDs
--
-- XACK alone acknowledges for the whole group: a worker that lost an entry's lease (a zombie
-- after a long pause) would ack the new owner's delivery. Returns the IDs that were NOT acked
-- because another consumer owns them now (or they are no longer pending).
local lost = {}
for i = 3, #ARGV do
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if pending[1] and pending[1][2] == ARGV[2] then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
