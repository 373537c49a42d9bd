-- checkpoint_save: moves a reader's checkpoint forward, creating it if
-- missing. $1 log, $2 reader, $3 tx_id, $4 position.
-- A checkpoint never moves back: a position at or before the stored one
-- changes nothing, and no row is affected. A concurrent save of the same
-- checkpoint waits for the other transaction, then compares with its result.
INSERT INTO {{.schema}}.txlog_checkpoints AS c (log_name, reader, tx_id, position)
VALUES ($1, $2, $3::xid8, $4::bigint)
ON CONFLICT (log_name, reader) DO UPDATE
SET tx_id = EXCLUDED.tx_id, position = EXCLUDED.position, updated_at = now()
WHERE (c.tx_id, c.position) < (EXCLUDED.tx_id, EXCLUDED.position)
