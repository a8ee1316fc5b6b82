-- Ferry: one page of the jobs a group has yet to read, newest published first, straight from
-- the streams (queued jobs have no index entry: publishing writes none, to keep a publish cheap).
--
-- KEYS      the streams of the queue's lanes  ferry:{Q}:jobs, ferry:{Q}:jobs:<priority>, ...
-- ARGV[1]   the group
-- ARGV[2]   the cursor: the last entry ID a page looked at, or '' for the first page
-- ARGV[3]   how many jobs a page holds
-- ARGV[4]   how many entries to look at in each lane, at most (more than ARGV[3] with a filter)
-- ARGV[5]   a job type to keep, or '' for every type
-- ARGV[6]   a flow-control key to keep (the entry's `key`), or '' for every job
--
-- A lane's unread entries are those after the group's last-delivered ID there (every entry when
-- the group has not been created on that lane yet). An entry redriven for another group
-- (`redrive_group`) is not this group's to run, and is left out. Entry IDs are unique across a
-- queue's lanes (add_job), so the page is the newest entries of every lane merged by ID, and
-- the cursor (an entry ID) carries over. Returns { rows, next cursor or false } with each row
-- { entry ID, job id, type }.
-- ferry:function-flags allow-oom
-- ferry:prelude
local limit, budget = tonumber(ARGV[3]), tonumber(ARGV[4])

-- Whether entry ID a comes after b.
local function after(a, b) return id_before(b, a) end

local candidates = {}
-- The newest of the oldest entries looked at in each lane that had more than the budget: below
-- it, a lane may hold entries not looked at yet, so this page stops there.
local floor = nil
for _, stream in ipairs(KEYS) do
  if redis.call('EXISTS', stream) == 1 then
    local last = '0-0'
    for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
      local name, delivered
      for i = 1, #info, 2 do
        if info[i] == 'name' then name = info[i + 1] elseif info[i] == 'last-delivered-id' then delivered = info[i + 1] end
      end
      if name == ARGV[1] then last = delivered end
    end
    local high = ARGV[2] ~= '' and ('(' .. ARGV[2]) or '+'
    local entries = redis.call('XREVRANGE', stream, high, '(' .. last, 'COUNT', budget)
    if #entries == budget and (floor == nil or after(entries[#entries][1], floor)) then
      floor = entries[#entries][1]
    end
    for _, entry in ipairs(entries) do
      local fields = entry[2]
      local job_id, job_type, key, redrive_group = entry[1], '', '', nil
      for i = 1, #fields, 2 do
        local name = fields[i]
        if name == 'job_id' then job_id = fields[i + 1]
        elseif name == 'type' then job_type = fields[i + 1]
        elseif name == 'key' then key = fields[i + 1]
        elseif name == 'redrive_group' then redrive_group = fields[i + 1] end
      end
      if (ARGV[5] == '' or job_type == ARGV[5]) and (ARGV[6] == '' or key == ARGV[6])
          and (redrive_group == nil or redrive_group == ARGV[1]) then
        candidates[#candidates + 1] = { entry[1], job_id, job_type }
      end
    end
  end
end
table.sort(candidates, function(a, b) return after(a[1], b[1]) end)
local rows = {}
for _, candidate in ipairs(candidates) do
  if #rows == limit or (floor and after(floor, candidate[1])) then break end
  rows[#rows + 1] = candidate
end
local next_cursor = false
if #rows == limit and #candidates > limit then
  next_cursor = rows[#rows][1]
elseif floor then
  -- Everything from the floor up was looked at: the next page goes on below it.
  next_cursor = (#rows == limit and after(rows[#rows][1], floor)) and rows[#rows][1] or floor
end
return { rows, next_cursor }
