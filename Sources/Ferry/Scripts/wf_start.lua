-- Ferry: start a workflow: its state, its index entry, its history, and its first steps' jobs, in
-- one step (docs/design.md, "Workflows").
--
-- KEYS[1]  the job stream        ferry:{Q}:jobs
-- KEYS[2]  the workflow          ferry:{Q}:wf:<id>
-- KEYS[3]  the start dedup key   ferry:{Q}:wf:idem:<key>, when ARGV[5] is not ''
-- ARGV[1]  the workflow id
-- ARGV[2]  the workflow's name
-- ARGV[3]  its input: every step's job carries it as `data`, or by reference when ARGV[8] is set
-- ARGV[4]  the consumer group whose step ends move it
-- ARGV[5]  the dedup window in milliseconds, or '' for a start without an idempotency key
-- ARGV[6]  the steps' total weight
-- ARGV[7]  its deadline, ms from now ('' for none): past it, it fails and its steps are cancelled
-- ARGV[8]  '' for an input kept in `data`, or '<sha256> <size>' for a large one, kept once in
--          ferry:{Q}:wf:<id>:payloads (field :input) and named by each step's job (data_ref workflow)
-- ARGV[9..] per step: its name and its compiled spec (JSON: type, fields, next, deps, weight,
--          on_failure, budget), in definition order
--
-- Returns {1, id} when started; {0, id} when the key was used within the window (the id of the
-- workflow it started) or a workflow with this id exists; then nothing is written.
-- ferry:prelude
-- ferry:workflow
if ARGV[5] ~= '' then
  local first = redis.call('GET', KEYS[3])
  if first then
    return {0, first}
  end
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {0, ARGV[1]}
end
local now = now_ms()
redis.call('HSET', KEYS[2], 'name', ARGV[2], 'group', ARGV[4], 'steps', (#ARGV - 8) / 2, 'ended', 0,
  'weight', ARGV[6], 'weight_done', 0, 'progress', 0, 'created_at', now)
if ARGV[8] == '' then
  redis.call('HSET', KEYS[2], 'data', ARGV[3])
else
  redis.call('HSET', KEYS[2], 'data_ref', ARGV[8])
  redis.call('HSET', KEYS[2] .. ':payloads', ':input', ARGV[3])
end
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[2], 'deadline_at', now + tonumber(ARGV[7]))
  redis.call('ZADD', key_prefix_of(KEYS[1]) .. ':wf:deadlines', now + tonumber(ARGV[7]), ARGV[1])
end
for i = 9, #ARGV, 2 do
  redis.call('HSET', KEYS[2], 'step.' .. ARGV[i], ARGV[i + 1], 's.' .. ARGV[i] .. '.state', 'waiting',
    's.' .. ARGV[i] .. '.met', 0, 's.' .. ARGV[i] .. '.runs', 0)
end
workflow_set_state(KEYS[1], KEYS[2], ARGV[1], 'running', now, 0)
workflow_event(KEYS[2], 'started', '', ARGV[2], now)
for i = 9, #ARGV, 2 do
  local spec = cjson.decode(ARGV[i + 1])
  if spec.deps == 0 then
    workflow_enqueue(KEYS[1], KEYS[2], ARGV[1], ARGV[i], spec)
  end
end
if ARGV[5] ~= '' then
  redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[5])
end
return {1, ARGV[1]}
