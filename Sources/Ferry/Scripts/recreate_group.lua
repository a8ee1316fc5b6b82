-- Ferry: recreate a consumer group that disappeared while a worker ran (XGROUP DESTROY, or the
-- stream deleted by a flush).
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the consumer group
-- ARGV[2]  the last entry ID this worker read from the group, or '' if it read none
--
-- A Pub/Sub subscription made again does not replay old messages, and neither does this. An
-- empty (or new) stream gets the group at its start ('0'): nothing to replay, nothing missed.
-- Otherwise the group is made after the last entry the worker read, so the jobs the old group
-- handled do not all run again while entries published since (also into a stream deleted and
-- written again, whose new IDs are later) are still delivered; a worker that read nothing uses
-- the stream's end ('$'). The check and the creation are one step, so a publish cannot fall
-- between them. Returns {'start'}, or {position, first ID, last ID, number of entries}, or
-- {'exists'} when another worker made the group first.
-- ferry:function-flags allow-oom
local length = redis.call('XLEN', KEYS[1])
local position = '0'
if length > 0 then
  position = ARGV[2] ~= '' and ARGV[2] or '$'
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], position, 'MKSTREAM')
if type(created) == 'table' and created.err then
  if string.sub(created.err, 1, 9) == 'BUSYGROUP' then
    return {'exists'}
  end
  return created
end
if length == 0 then
  return {'start'}
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1][1]
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1][1]
return {position, first, last, length}
