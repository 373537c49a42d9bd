-- record: claims (consumer, message_id) inside the caller's transaction.
-- $1 consumer, $2 message id, $3 retention in microseconds.
-- One row inserted: the message is new. None: it was recorded before. A
-- concurrent, uncommitted claim of the same pair makes this statement wait
-- for that transaction: if it commits, nothing is inserted; if it rolls back,
-- this claim inserts the row.
INSERT INTO {{.schema}}.inbox (consumer, message_id, expires_at)
VALUES ($1, $2, now() + $3::bigint * interval '1 microsecond')
ON CONFLICT (consumer, message_id) DO NOTHING
