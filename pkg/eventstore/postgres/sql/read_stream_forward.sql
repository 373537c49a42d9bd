-- read_stream_forward: events of stream $1 from version $2 on, ascending,
-- at most $3 (NULL: all).
SELECT stream_id, stream_type, version, event_id, type, schema_version, data, metadata,
       recorded_at, tx_id, position
FROM {{.schema}}.events
WHERE stream_id = $1::text AND version >= $2::bigint
ORDER BY version
LIMIT $3::bigint
