-- Ferry retention for the dead-letter stream: delete dead letters older than a maximum age.
--
-- KEYS[1]  the dead-letter stream  ferry:{Q}:dead
-- ARGV[1]  maximum age in milliseconds
--
-- A dead letter's entry ID is the time it was dead-lettered, so XTRIM MINID at now minus the
-- age (Redis's clock) removes exactly the older ones; the '~' may keep a few more, never fewer,
-- so no dead letter younger than the age is ever trimmed. Returns the number removed.
-- ferry:prelude
return redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f-0', math.max(now_ms() - tonumber(ARGV[1]), 0)))
