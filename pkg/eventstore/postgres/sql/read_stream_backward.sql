-- read_stream_backward: events of stream $1 up to version $2 (0: to the
-- last), descending, at most $3 (NULL: all).
SELECT stream_id, stream_type, version, event_id, type, schema_version, data, metadata,
       recorded_at, tx_id, position
FROM {{.schema}}.events
WHERE stream_id = $1::text AND ($2::bigint = 0 OR version <= $2::bigint)
ORDER BY version DESC
LIMIT $3::bigint
