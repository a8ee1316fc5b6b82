-- Ferry: count a stretch of a stream, for the ENTRIESREAD of a group placed mid-stream.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  where to start, exclusive: '(' followed by an entry ID
-- ARGV[2]  where to stop, inclusive: an entry ID
-- ARGV[3]  at most this many entries per call
--
-- Returns {n, the last ID counted} ({0, ''} when there is none); the caller goes on after that
-- ID while n is ARGV[3]. Counting here sends two values back instead of every entry's fields.
-- ferry:function-flags allow-oom
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
if #entries == 0 then
  return {0, ''}
end
return {#entries, entries[#entries][1]}
