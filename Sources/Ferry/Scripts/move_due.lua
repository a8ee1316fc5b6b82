-- Ferry: move scheduled jobs that are due into the job stream, a batch at a time.
--
-- KEYS[1]  the job stream   ferry:{Q}:jobs
-- KEYS[2]  the due index    ferry:{Q}:scheduled (sorted set: <id> -> due time, ms)
-- ARGV[1]  the fields prefix       ferry:{Q}:scheduled:
-- ARGV[2]  the status key prefix   ferry:{Q}:job:
-- ARGV[3]  how many to move at most in this call
--
-- Due means at or before Redis's clock. Each job is added to the stream (the lane of its
-- priority) with the fields it was
-- published with and leaves the index in the same step, so whichever worker runs this first
-- moves it, once, and every group then receives it as any job. A job whose fields expired (no
-- worker ran for longer than their keep time) only leaves the index. A job without its own
-- `published_at` gets the time it was moved. Its status, if kept, gets its entry ID and
-- `queued_at`. Returns {jobs moved, 1 when more are due, else 0}.
-- ferry:function-flags allow-oom
-- ferry:prelude
local now = now_ms()
local limit = tonumber(ARGV[3])
local due = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)
local moved = 0
for _, id in ipairs(due) do
  local fields = redis.call('HGETALL', ARGV[1] .. id)
  if #fields > 0 then
    if redis.call('HEXISTS', ARGV[1] .. id, 'published_at') == 0 then
      -- Published, for latency figures, when it became due.
      fields[#fields + 1] = 'published_at'
      fields[#fields + 1] = now
    end
    local entry_id = add_job(KEYS[1], fields, 1, #fields)
    moved = moved + 1
    local status = ARGV[2] .. id
    if redis.call('EXISTS', status) == 1 then
      redis.call('HSET', status, 'entry_id', entry_id, 'queued_at', now)
    end
  end
  redis.call('DEL', ARGV[1] .. id)
  redis.call('ZREM', KEYS[2], id)
end
if #due == limit then
  return {moved, 1}
end
return {moved, 0}
