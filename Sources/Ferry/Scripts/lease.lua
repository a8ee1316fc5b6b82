-- Ferry: set the idle time of entries this consumer owns, without counting a delivery.
--
-- KEYS[1]  the job stream  ferry:{Q}:jobs
-- ARGV[1]  the consumer group
-- ARGV[2]  this consumer's name
-- ARGV[3]  the idle time to set, in milliseconds
-- ARGV[4..] entry IDs
--
-- Idle 0 extends the lease of a running job (as Pub/Sub clients extend ack deadlines): other
-- workers reclaim only entries idle longer than the lease (plus backoff). JUSTID keeps the
-- delivery count unchanged. Returns {the IDs another consumer owns now, the IDs deleted from the
-- stream (XDEL, XTRIM) while pending}: XCLAIM (Redis 7) claims no deleted entry and drops it from
-- the pending list. An ID no longer pending is left out: the worker's snapshot of its running
-- jobs races its own acknowledgements, and a job acknowledged (or dead-lettered) while this call
-- was on its way lost nothing. An entry of another priority's lane is found in its lane.
-- ferry:function-flags allow-oom
-- ferry:prelude
local lost, deleted = {}, {}
for i = 4, #ARGV do
  local pending, lane = pending_lane(KEYS[1], ARGV[1], ARGV[i])
  if pending then
    if pending[2] == ARGV[2] then
      local claimed = redis.call('XCLAIM', lane, ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
      if #claimed == 0 then
        deleted[#deleted + 1] = ARGV[i]
      end
    else
      lost[#lost + 1] = ARGV[i]
    end
  end
end
return {lost, deleted}
