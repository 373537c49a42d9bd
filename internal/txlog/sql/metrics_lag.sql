-- metrics_lag: for every registered reader of log $1, its estimated lag in
-- rows and, when the log has a time column, the age in seconds of the next
-- row it will read (NULL when it has read everything). $2 is the quoted,
-- qualified log table for pg_get_serial_sequence. The lag_seconds placeholder
-- is either NULL or the sub-select of lag_seconds.sql.
-- The row lag is the identity sequence's last value minus the checkpoint's
-- position: an estimate, read in constant time (see the package docs).
WITH seq AS MATERIALIZED (
    SELECT coalesce(pg_sequence_last_value(pg_get_serial_sequence($2, 'position')::regclass), 0) AS last_position
)
SELECT c.reader,
       greatest((SELECT last_position FROM seq) - c.position, 0)::float8 AS lag_rows,
       {{.lag_seconds}} AS lag_seconds
FROM {{.schema}}.txlog_checkpoints c
WHERE c.log_name = $1
ORDER BY c.reader
