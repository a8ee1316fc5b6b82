-- Ferry: one page of a group's jobs from the index, newest published first, read atomically
-- across the states asked for, so a job that changes state between pages is still listed once.
--
-- KEYS      the index sets to read  ferry:{Q}:idx:<group>:<state>
-- ARGV[1]   the cursor's score (ms), or '+inf' for the first page
-- ARGV[2]   the cursor's member, or '' for the first page
-- ARGV[3]   how many jobs a page holds
-- ARGV[4]   how many index members to look at, at most (more than ARGV[3] with a type filter)
-- ARGV[5]   the status key prefix  ferry:{Q}:job:
-- ARGV[6]   the group
-- ARGV[7]   a job type to keep, or '' for every type
-- ARGV[8]   a flow-control key to keep (the status's `key`), or '' for every job
-- ARGV[9..] the state of each set, in the order of KEYS
--
-- Members are ordered by (score, member) descending: the cursor (score, member) is the last one
-- looked at, and the next page starts strictly after it. A job is in one set at a time and
-- keeps its score (its publish time) when its state changes, so paging on while jobs move
-- lists each once. Returns { rows, next cursor score, next cursor member } with each row
-- { member, score, state, job_id, type, attempts, error_class, updated_at }; the cursor is
-- false when nothing is left.
-- ferry:function-flags allow-oom
-- ferry:prelude
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local candidates = {}
local more = false
for i, set in ipairs(KEYS) do
  local state = ARGV[8 + i]
  local max = ARGV[1]
  if ARGV[2] ~= '' then
    local tied = redis.call('ZRANGE', set, ARGV[1], ARGV[1], 'BYSCORE', 'REV', 'WITHSCORES')
    for j = 1, #tied, 2 do
      if tied[j] < ARGV[2] then
        candidates[#candidates + 1] = { tied[j], tonumber(tied[j + 1]), state }
      end
    end
    max = '(' .. ARGV[1]
  end
  local rows = redis.call('ZRANGE', set, max, '-inf', 'BYSCORE', 'REV', 'LIMIT', 0, budget, 'WITHSCORES')
  for j = 1, #rows, 2 do
    candidates[#candidates + 1] = { rows[j], tonumber(rows[j + 1]), state }
  end
  if #rows / 2 == budget then more = true end
end
table.sort(candidates, function(a, b)
  if a[2] ~= b[2] then return a[2] > b[2] end
  return a[1] > b[1]
end)
local page, last = {}, nil
local examined = 0
for _, candidate in ipairs(candidates) do
  if #page == limit or examined == budget then
    more = true
    break
  end
  examined = examined + 1
  last = candidate
  local prefix = ARGV[6] .. '.'
  local fields = redis.call('HMGET', ARGV[5] .. candidate[1], 'job_id', 'type', prefix .. 'attempts',
    prefix .. 'error_class', prefix .. 'updated_at', 'key')
  if not fields[5] and candidate[3] == 'succeeded' then
    -- A success packed in its minute's hash (data format 3).
    local packed = packed_succeeded(ARGV[5], ARGV[6], candidate[1])
    if packed then
      fields[2], fields[3], fields[5] = fields[2] or packed.type, packed.attempts, packed.finished_at
    end
  end
  if (ARGV[7] == '' or fields[2] == ARGV[7]) and (ARGV[8] == '' or fields[6] == ARGV[8]) then
    page[#page + 1] = { candidate[1], tostring(candidate[2]), candidate[3], fields[1] or candidate[1], fields[2] or '',
      fields[3] or '', fields[4] or '', fields[5] or '' }
  end
end
if more and last then
  return { page, tostring(last[2]), last[1] }
end
return { page, false, false }
