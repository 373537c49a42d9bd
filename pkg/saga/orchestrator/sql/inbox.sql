-- inbox: records the batch's messages ($2 ids) for consumer $1 in the same
-- transaction as their effect; returns those not recorded before. Retention
-- $3 in microseconds.
INSERT INTO {{.schema}}.inbox (consumer, message_id, expires_at)
SELECT $1, m, now() + $3::bigint * interval '1 microsecond'
FROM unnest($2::text[]) AS m
ON CONFLICT (consumer, message_id) DO NOTHING
RETURNING message_id
