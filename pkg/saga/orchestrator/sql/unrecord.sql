-- unrecord: forgets the messages ($2 ids) of consumer $1 that this
-- transaction recorded (inbox.sql) but did not apply, so that a later
-- delivery of one of them (a redelivery, a replay from the dead-letter topic)
-- is applied instead of being dropped as a duplicate.
DELETE FROM {{.schema}}.inbox
WHERE consumer = $1 AND message_id = ANY ($2::text[])
