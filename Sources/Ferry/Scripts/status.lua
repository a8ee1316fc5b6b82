-- Ferry: record a group's state of a job when no entry moves with it: a job interrupted at
-- shutdown ('failed', left pending for another worker to run again).
--
-- KEYS[1]   the job's status hash  ferry:{Q}:job:<job_id>
-- ARGV[1]   the index prefix  ferry:{Q}:idx:
-- ARGV[2]   the consumer group
-- ARGV[3]   the job id
-- ARGV[4]   its stream entry ID
-- ARGV[5]   the state
-- ARGV[6]   now, in milliseconds since the epoch
-- ARGV[7]   how long the status stays if the state is terminal, in milliseconds
-- ARGV[8..] the group's other fields and values
-- ferry:function-flags allow-oom
-- ferry:prelude
local fields = {}
for i = 8, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
set_status(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], fields)
return 1
