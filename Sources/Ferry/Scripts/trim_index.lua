-- Ferry retention: remove index members whose status has expired.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the index prefix  ferry:{Q}:idx:
-- ARGV[2]  the status key prefix  ferry:{Q}:job:
-- ARGV[3]  how many members to look at in this call, at most
-- ARGV[4]  how long an idle set of succeeded jobs stays (ms): what their statuses keep
-- ARGV[5]  how long an idle set of any other state stays (ms)
-- ARGV[6..] the indexed states
--
-- A job's status hash expires on its own (its keep time); its index entry goes here. A success
-- packed in its minute's hash (data format 3) lives while its field there does. Each set
-- of each group is read from its oldest member (published first, so expired first), a chunk at
-- a time, for as long as chunks hold expired members; a chunk of live ones ends that set. Each
-- set gets the expiry of its statuses (the keep time of failed jobs for running and retrying
-- ones), renewed by every pass: the sets of a group that is deleted, or no longer worked,
-- expire with the rest of what it left.
-- Returns { members removed, 1 when the budget ran out before every set was done, else 0 }.
-- ferry:function-flags allow-oom
-- ferry:prelude
if redis.call('EXISTS', KEYS[1]) == 0 then
  return { 0, 0 }
end
local budget = tonumber(ARGV[3])
local removed = 0
for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local name
  for i = 1, #group, 2 do
    if group[i] == 'name' then name = group[i + 1] end
  end
  for s = 6, #ARGV do
    local set = ARGV[1] .. name .. ':' .. ARGV[s]
    if ARGV[s] == 'succeeded' then
      redis.call('PEXPIRE', set, ARGV[4])
    else
      redis.call('PEXPIRE', set, ARGV[5])
    end
    local start = 0
    while true do
      if budget <= 0 then
        return { removed, 1 }
      end
      local chunk = math.min(budget, 500)
      local members = redis.call('ZRANGE', set, start, start + chunk - 1)
      budget = budget - #members
      local gone = {}
      for _, member in ipairs(members) do
        if redis.call('EXISTS', ARGV[2] .. member) == 0
            and not (ARGV[s] == 'succeeded' and packed_succeeded(ARGV[1], name, member)) then
          gone[#gone + 1] = member
        end
      end
      if #gone > 0 then
        redis.call('ZREM', set, unpack(gone))
        removed = removed + #gone
      end
      if #members < chunk or #gone == 0 then
        break
      end
      start = start + #members - #gone
    end
  end
end
return { removed, 0 }
