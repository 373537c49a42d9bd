-- lag_seconds: the age of the next row reader c will read, by the log's time
-- column; one index probe on (tx_id, position). Part of metrics_lag.sql.
(SELECT greatest(extract(epoch FROM now() - l.{{.time_column}}), 0)::float8
 FROM {{.table}} l
 WHERE (l.tx_id, l.position) > (c.tx_id, c.position)
 ORDER BY l.tx_id, l.position
 LIMIT 1)
