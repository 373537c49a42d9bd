-- inbox: records the messages the batch applied ($2 ids) for consumer $1 in
-- the same transaction as their effect; retention $3 in microseconds. seen.sql
-- found none of them, under the sagas' locks: a conflict means a concurrent
-- transaction recorded one since, and the batch is retried.
INSERT INTO {{.schema}}.inbox (consumer, message_id, expires_at)
SELECT $1, m, now() + $3::bigint * interval '1 microsecond'
FROM unnest($2::text[]) AS m
ON CONFLICT (consumer, message_id) DO NOTHING
