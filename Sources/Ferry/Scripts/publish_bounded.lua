-- Ferry: publish a batch of jobs to a queue with a maximum depth, all of them or none.
--
-- KEYS[1]  the job stream      ferry:{Q}:jobs
-- KEYS[2..] the publish dedup keys ferry:{Q}:idem:pub:<key> of the jobs that have one
-- ARGV[1]  the queue's maximum depth
-- ARGV[2]  the dedup window in milliseconds
-- ARGV[3]  the prefix of the groups' later deliveries  ferry:{Q}:delayed:
-- ARGV[4..] for each job: its index in KEYS of its dedup key (0 for none), its job id ('' for
--          the entry ID), its number of field values, then its fields and values
--
-- The depth is the backlog of the slowest group: entries it has not read (its lag), read and
-- not acknowledged (pending), and parked for a later delivery; the stream's length when no group
-- exists yet, or when Redis cannot tell a group's lag (after deletions inside the stream). A
-- duplicate of a key published within the window adds nothing and takes no room. When the jobs
-- that would be added do not fit, nothing is written. Returns {1, {job id, entry id or '',
-- 1 added | 0 duplicate}...} or {0, depth, added it asked for}.
-- ferry:prelude
local depth = 0
local groups = group_infos(KEYS[1])
if #groups == 0 then
  depth = redis.call('XLEN', KEYS[1])
end
for _, info in ipairs(groups) do
  local lag = info['lag']
  if type(lag) ~= 'number' then
    lag = redis.call('XLEN', KEYS[1])
  end
  local backlog = lag + info['pending'] + redis.call('ZCARD', ARGV[3] .. info['name'])
  if backlog > depth then
    depth = backlog
  end
end
-- The jobs of the batch, and which are duplicates.
local jobs, adding = {}, 0
local i = 4
while i <= #ARGV do
  local dedup, job_id, count = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  local first = dedup > 0 and redis.call('GET', KEYS[dedup]) or nil
  jobs[#jobs + 1] = { dedup = dedup, job_id = job_id, from = i + 3, to = i + 2 + count, first = first }
  if not first then
    adding = adding + 1
  end
  i = i + 3 + count
end
if depth + adding > tonumber(ARGV[1]) then
  return {0, depth, adding}
end
local replies = {}
for _, job in ipairs(jobs) do
  -- A key given twice in one batch: its second job finds the first's.
  local first = job.first or (job.dedup > 0 and redis.call('GET', KEYS[job.dedup])) or nil
  if first then
    replies[#replies + 1] = { first, '', 0 }
  else
    local entry_id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, job.from, job.to))
    local job_id = job.job_id ~= '' and job.job_id or entry_id
    if job.dedup > 0 then
      redis.call('SET', KEYS[job.dedup], job_id, 'PX', ARGV[2])
    end
    replies[#replies + 1] = { job_id, entry_id, 1 }
  end
end
return {1, replies}
