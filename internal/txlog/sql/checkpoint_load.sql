-- checkpoint_load: a reader's checkpoint. $1 log, $2 reader.
SELECT tx_id, position
FROM {{.schema}}.txlog_checkpoints
WHERE log_name = $1 AND reader = $2
