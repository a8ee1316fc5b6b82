-- Ferry: the audit of a queue's running workflows (ferry workflow check): a step the workflow
-- waits on whose job can no longer end it. Reads only.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the prefix of the groups' later deliveries  ferry:{Q}:delayed:
-- ARGV[2]  how many running workflows to look at, at most
--
-- A queued step's job is alive while its entry is in a lane and the workflow's group has not read
-- it yet, holds it pending, or has it parked for a later delivery. A workflow whose every step
-- has ended but is still running is stuck too. Returns {{workflow id, step, why}...}.
-- ferry:function-flags allow-oom
-- ferry:prelude
-- ferry:workflow
local stuck = {}
local prefix = key_prefix_of(KEYS[1])
local lanes = lane_streams(KEYS[1])
for _, id in ipairs(redis.call('ZRANGE', prefix .. ':wf:idx:running', 0, tonumber(ARGV[2]) - 1)) do
  local wf = prefix .. ':wf:' .. id
  local group = redis.call('HGET', wf, 'group')
  local all = redis.call('HGETALL', wf)
  local waiting_on = 0
  for i = 1, #all, 2 do
    local name = string.match(all[i], '^s%.(.+)%.state$')
    if name and all[i + 1] == 'queued' then
      waiting_on = waiting_on + 1
      local entry = redis.call('HGET', wf, 's.' .. name .. '.entry_id')
      local alive = false
      for _, lane in ipairs(lanes) do
        if #redis.call('XRANGE', lane, entry, entry) > 0 then
          for _, info in ipairs(group_infos(lane)) do
            if info['name'] == group and (id_before(info['last-delivered-id'], entry)
                or redis.call('XPENDING', lane, group, entry, entry, 1)[1]
                or redis.call('ZSCORE', ARGV[1] .. group, entry)) then
              alive = true
            end
          end
          if #group_infos(lane) == 0 then
            alive = true  -- no worker of any group has read the lane yet
          end
        end
      end
      if not alive then
        stuck[#stuck + 1] = { id, name, 'its job ' .. (redis.call('HGET', wf, 's.' .. name .. '.job_id') or '?')
          .. ' (entry ' .. entry .. ') can no longer end it: not in the queue, or finished in group ' .. group }
      end
    elseif name and all[i + 1] == 'waiting' then
      waiting_on = waiting_on + 1
    end
  end
  if waiting_on == 0 then
    stuck[#stuck + 1] = { id, '', 'every step has ended but the workflow is still running' }
  end
end
return stuck
