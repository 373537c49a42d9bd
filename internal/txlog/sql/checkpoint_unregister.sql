-- checkpoint_unregister: forgets a reader's checkpoint. $1 log, $2 reader.
DELETE FROM {{.schema}}.txlog_checkpoints
WHERE log_name = $1 AND reader = $2
