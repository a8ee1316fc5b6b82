-- Ferry: move an entry to the dead-letter stream and acknowledge it, atomically.
--
-- KEYS[1]  the job stream          ferry:{Q}:jobs
-- KEYS[2]  the dead-letter stream  ferry:{Q}:dead
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the entry ID
-- ARGV[4..] dead_letter.* fields and values to add after the original fields
--
-- The original fields are copied from the stream itself, byte for byte, duplicates included.
-- If the XADD fails (Redis out of memory, say) the script stops before XACK: the entry stays
-- pending and is retried, never dropped. Other groups keep their own copy of the job: like
-- Pub/Sub, dead-lettering acts on one subscription. Returns 1, or 0 when this consumer no
-- longer owns the entry (nothing is written then).
-- ferry:prelude
if not owned(KEYS[1], ARGV[1], ARGV[2], ARGV[3]) then
  return 0
end
local fields = {}
local entry = redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3])
if entry[1] then
  for _, value in ipairs(entry[1][2]) do
    fields[#fields + 1] = value
  end
end
for i = 4, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
redis.call('XADD', KEYS[2], '*', unpack(fields))
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
return 1
