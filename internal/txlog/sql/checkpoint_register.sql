-- checkpoint_register: records a checkpoint at the beginning of the log for a
-- reader that has none. $1 log, $2 reader.
INSERT INTO {{.schema}}.txlog_checkpoints (log_name, reader, tx_id, position)
VALUES ($1, $2, '0'::xid8, 0)
ON CONFLICT (log_name, reader) DO NOTHING
