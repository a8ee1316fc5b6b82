-- Ferry's workflow parts (docs/design.md, "Workflows"): what the scripts that start a workflow and
-- end its steps share. Built on the prelude (add_job, now_ms), which comes first.
--
-- A workflow `ferry:{Q}:wf:<id>` (hash): `state` (running, blocked, succeeded, failed,
-- cancelled), `name`, `data` (the input every step's job carries) or `data_ref` ('<sha256> <size>'
-- of a large input kept in `:payloads`, field `:input`), `steps` and `ended` (counts),
-- `weight` and `weight_done` (for progress), `progress` (0-100), times, `reason` and `at_step` of
-- a block or failure; per step `step.<name>` (its spec as JSON: type, fields, next, deps, weight,
-- on_failure, budget), `group` (the consumer group whose step ends move it), and
-- `s.<name>.state` (waiting, queued, succeeded, dead, cancelled),
-- `.met` (dependencies ended), `.runs`, `.job_id`, `.entry_id`, `.finished_at`.

-- The queue's key prefix (ferry:{Q}, no colon) from its job stream's key. Not `queue_prefix`
-- (the prelude's, from the index prefix, with the colon): in the function library every part
-- shares one scope, so a second function of that name would take the first's place for every
-- script after it.
local function key_prefix_of(stream)
  return string.sub(stream, 1, -6)
end

-- Appends an event to the workflow's history (a stream of at most about 1,000 events).
local function workflow_event(wf, event, step, detail, now)
  redis.call('XADD', wf .. ':history', 'MAXLEN', '~', 1000, '*', 'event', event, 'step', step or '',
    'detail', detail or '', 'at', now)
end

-- Moves the workflow to `to`: its state, its place in the index of workflows by state, and, at an
-- end, its finish time and the expiry of its keys (`keep` ms).
local function workflow_set_state(stream, wf, id, to, now, keep)
  local from = redis.call('HGET', wf, 'state')
  local index = key_prefix_of(stream) .. ':wf:idx:'
  if from then
    redis.call('ZREM', index .. from, id)
  end
  redis.call('ZADD', index .. to, now, id)
  redis.call('HSET', wf, 'state', to, 'updated_at', now)
  if to == 'succeeded' or to == 'failed' or to == 'cancelled' then
    redis.call('HSET', wf, 'finished_at', now)
    redis.call('ZREM', key_prefix_of(stream) .. ':wf:deadlines', id)
    for _, key in ipairs({ wf, wf .. ':results', wf .. ':history', wf .. ':payloads' }) do
      redis.call('PEXPIRE', key, keep)
    end
  end
end

-- Adds step `name`'s job (its next run): the input as `data` (or a reference to it), the job id `<id>/<name>` (with
-- `#<run>` from the second run on), the fields its spec compiled (type, attempts, timeout, ...),
-- and `deliver_at` when given (a retry decision's delay). Returns the job id.
local function workflow_enqueue(stream, wf, id, name, spec, deliver_at)
  local runs = redis.call('HINCRBY', wf, 's.' .. name .. '.runs', 1)
  local job_id = id .. '/' .. name .. (runs > 1 and ('#' .. runs) or '')
  local fields = { 'type', spec.type, 'job_id', job_id, 'workflow', id, 'step', name }
  local data, data_ref = unpack(redis.call('HMGET', wf, 'data', 'data_ref'))
  if data_ref then
    local sha256, size = string.match(data_ref, '^(%x+) (%d+)$')
    for _, value in ipairs({ 'data_ref', 'workflow', 'data_sha256', sha256, 'data_size', size }) do
      fields[#fields + 1] = value
    end
  else
    fields[#fields + 1] = 'data'
    fields[#fields + 1] = data or ''
  end
  for _, value in ipairs(spec.fields) do
    fields[#fields + 1] = value
  end
  if deliver_at then
    fields[#fields + 1] = 'deliver_at'
    fields[#fields + 1] = deliver_at
  end
  local entry_id = add_job(stream, fields, 1, #fields)
  redis.call('HSET', wf, 's.' .. name .. '.state', 'queued', 's.' .. name .. '.job_id', job_id,
    's.' .. name .. '.entry_id', entry_id)
  return job_id
end

-- A step's compiled spec.
local function workflow_spec(wf, name)
  return cjson.decode(redis.call('HGET', wf, 'step.' .. name))
end

-- The step has ended for the workflow (succeeded, or dead under `on_failure: continue`): it counts
-- toward progress and its successors whose dependencies have all ended are added.
local function workflow_advance(stream, wf, id, name, spec, now, keep)
  redis.call('HINCRBY', wf, 'ended', 1)
  local done = redis.call('HINCRBY', wf, 'weight_done', spec.weight)
  local total = tonumber(redis.call('HGET', wf, 'weight'))
  redis.call('HSET', wf, 'progress', math.floor(done * 100 / total))
  for _, next_name in ipairs(spec.next) do
    local met = redis.call('HINCRBY', wf, 's.' .. next_name .. '.met', 1)
    local next_spec = workflow_spec(wf, next_name)
    if met == next_spec.deps then
      workflow_enqueue(stream, wf, id, next_name, next_spec)
    end
  end
  if tonumber(redis.call('HGET', wf, 'ended')) >= tonumber(redis.call('HGET', wf, 'steps')) then
    workflow_set_state(stream, wf, id, 'succeeded', now, keep)
    workflow_event(wf, 'succeeded', '', '', now)
  end
end

-- Asks every step of the workflow whose job is queued to be cancelled (ferry job cancel's request:
-- a worker acknowledges it unrun, or cancels it running), and marks waiting ones cancelled.
local function workflow_cancel_steps(stream, wf, now)
  local cancel_requests = key_prefix_of(stream) .. ':cancel_requests'
  local all = redis.call('HGETALL', wf)
  for i = 1, #all, 2 do
    local name = string.match(all[i], '^s%.(.+)%.state$')
    if name and (all[i + 1] == 'queued' or all[i + 1] == 'waiting') then
      if all[i + 1] == 'queued' then
        redis.call('ZADD', cancel_requests, now + 604800000, redis.call('HGET', wf, 's.' .. name .. '.job_id'))
      end
      redis.call('HSET', wf, 's.' .. name .. '.state', 'cancelled')
    end
  end
end

-- Makes step `name` and every step after it (transitively) wait again, each with the count of its
-- dependencies that have ended and are not made to wait again: what a rerun of `name` needs
-- before its successors run again.
local function workflow_reset_from(wf, name)
  local reset, queue = { [name] = true }, { name }
  while #queue > 0 do
    local current = table.remove(queue)
    for _, next_name in ipairs(workflow_spec(wf, current).next) do
      if not reset[next_name] then
        reset[next_name] = true
        queue[#queue + 1] = next_name
      end
    end
  end
  local ended, weight_done = 0, 0
  local all = redis.call('HGETALL', wf)
  local specs = {}
  for i = 1, #all, 2 do
    local step = string.match(all[i], '^step%.(.+)$')
    if step then
      specs[step] = cjson.decode(all[i + 1])
    end
  end
  for step, spec in pairs(specs) do
    if reset[step] then
      redis.call('HSET', wf, 's.' .. step .. '.state', 'waiting', 's.' .. step .. '.met', 0)
    else
      local state = redis.call('HGET', wf, 's.' .. step .. '.state')
      if state == 'succeeded' or state == 'dead' then
        ended = ended + 1
        weight_done = weight_done + spec.weight
      end
    end
  end
  for step, spec in pairs(specs) do
    if not reset[step] then
      local state = redis.call('HGET', wf, 's.' .. step .. '.state')
      if state == 'succeeded' or state == 'dead' then
        for _, next_name in ipairs(spec.next) do
          if reset[next_name] then
            redis.call('HINCRBY', wf, 's.' .. next_name .. '.met', 1)
          end
        end
      end
    end
  end
  local total = tonumber(redis.call('HGET', wf, 'weight'))
  redis.call('HSET', wf, 'ended', ended, 'weight_done', weight_done, 'progress', math.floor(weight_done * 100 / total))
end

-- Runs step `name` again (a retry decision, a resume from a step): it and every step after it
-- wait again, and its job is added (due at `deliver_at` when given) while its runs are within its
-- budget (or `forced`: a person resuming). Returns false when the budget is spent.
local function workflow_rerun(stream, wf, id, name, deliver_at, forced)
  local spec = workflow_spec(wf, name)
  if not forced and tonumber(redis.call('HGET', wf, 's.' .. name .. '.runs') or '0') >= spec.budget then
    return false
  end
  workflow_reset_from(wf, name)
  workflow_enqueue(stream, wf, id, name, spec, deliver_at)
  return true
end

-- Keeps step `name`'s result: in `:results` under its name, or when `result_ref` ('<sha256>
-- <size>') is given (a large one), in `:payloads` under its name with the reference in `:results`
-- under `<name>:ref` (no step name has a `:`). A rerun's result replaces the run before's.
local function workflow_keep_result(wf, name, result, result_ref)
  if result_ref then
    redis.call('HSET', wf .. ':payloads', name, result)
    redis.call('HSET', wf .. ':results', name .. ':ref', result_ref)
    redis.call('HDEL', wf .. ':results', name)
  else
    redis.call('HSET', wf .. ':results', name, result)
    redis.call('HDEL', wf .. ':results', name .. ':ref')
    redis.call('HDEL', wf .. ':payloads', name)
  end
end

-- A step's job ended (`outcome`: succeeded, dead or cancelled), applied to its workflow in the
-- same script as the job's own end. `decision` ('', block, fail, retry) and `detail` (the
-- reason, or for retry '<step> <delay ms>') come from the handler; `result` (with `result_ref`
-- when it goes by reference) is stored for the
-- steps that depend on this one. Only the workflow's own group (`group`) moves it: another group
-- reading the queue runs the step jobs as any jobs. An end from a run the workflow no longer
-- waits for (a step run again meanwhile), or of a workflow that has ended, is recorded in its
-- history only.
local function workflow_step_ended(stream, group, id, name, job_id, outcome, result, result_ref, decision, detail, now,
                                   keep_ok, keep_failed)
  local wf = key_prefix_of(stream) .. ':wf:' .. id
  local state, owner = unpack(redis.call('HMGET', wf, 'state', 'group'))
  if not state or owner ~= group then
    return
  end
  local current = redis.call('HGET', wf, 's.' .. name .. '.job_id')
  local step_state = redis.call('HGET', wf, 's.' .. name .. '.state')
  if current ~= job_id or step_state ~= 'queued' then
    workflow_event(wf, 'stale_' .. outcome, name, job_id, now)
    return
  end
  redis.call('HSET', wf, 's.' .. name .. '.state', outcome, 's.' .. name .. '.finished_at', now, 'updated_at', now)
  if outcome == 'succeeded' and result then
    workflow_keep_result(wf, name, result, result_ref)
  end
  workflow_event(wf, 'step_' .. outcome, name, job_id, now)
  if state ~= 'running' then
    return
  end
  local spec = workflow_spec(wf, name)
  if outcome == 'succeeded' and decision ~= '' then
    workflow_event(wf, 'decision', name, decision .. (detail ~= '' and (': ' .. detail) or ''), now)
  end
  if outcome == 'succeeded' and decision == 'block' then
    redis.call('HSET', wf, 'reason', detail, 'at_step', name)
    workflow_set_state(stream, wf, id, 'blocked', now, keep_failed)
    return
  elseif outcome == 'succeeded' and decision == 'fail' then
    redis.call('HSET', wf, 'reason', detail, 'at_step', name)
    workflow_cancel_steps(stream, wf, now)
    workflow_set_state(stream, wf, id, 'failed', now, keep_failed)
    workflow_event(wf, 'failed', name, detail, now)
    return
  elseif outcome == 'succeeded' and decision == 'retry' then
    local target, delay = string.match(detail, '^(.+) (%d+)$')
    if not workflow_rerun(stream, wf, id, target, now + tonumber(delay)) then
      local reason = 'step ' .. target .. ' has run as often as its attempts allow'
      redis.call('HSET', wf, 'reason', reason, 'at_step', target)
      workflow_cancel_steps(stream, wf, now)
      workflow_set_state(stream, wf, id, 'failed', now, keep_failed)
      workflow_event(wf, 'failed', target, reason, now)
    end
    return
  end
  if outcome == 'succeeded' or (outcome == 'dead' and spec.on_failure == 'continue') then
    workflow_advance(stream, wf, id, name, spec, now, keep_ok)
  elseif outcome == 'dead' and spec.on_failure == 'block' then
    redis.call('HSET', wf, 'reason', 'step ' .. name .. ' was dead-lettered', 'at_step', name)
    workflow_set_state(stream, wf, id, 'blocked', now, keep_failed)
    workflow_event(wf, 'blocked', name, 'dead-lettered', now)
  else
    local reason = 'step ' .. name .. (outcome == 'dead' and ' was dead-lettered' or ' was cancelled')
    redis.call('HSET', wf, 'reason', reason, 'at_step', name)
    workflow_cancel_steps(stream, wf, now)
    workflow_set_state(stream, wf, id, 'failed', now, keep_failed)
    workflow_event(wf, 'failed', name, reason, now)
  end
end
