-- Ferry: record a group's state of a job when no entry moves with it: a job interrupted at
-- shutdown ('failed', left pending for another worker to run again).
--
-- KEYS[1]   the job's status hash  ferry:{Q}:job:<job_id>
-- ARGV[1]   the index prefix  ferry:{Q}:idx:
-- ARGV[2]   the consumer group
-- ARGV[3]   the job id
-- ARGV[4]   the state
-- ARGV[5]   now, in milliseconds since the epoch
-- ARGV[6]   how long the status stays if the state is terminal, in milliseconds
-- ARGV[7..] the group's other fields and values
-- ferry:prelude
local fields = {}
for i = 7, #ARGV do
  fields[#fields + 1] = ARGV[i]
end
set_status(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], fields)
return 1
