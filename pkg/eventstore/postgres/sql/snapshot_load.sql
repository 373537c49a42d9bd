-- snapshot_load: the snapshot of stream $1 with type $2 and schema version
-- $3 at the highest version up to $4 (0: any), through the primary key.
SELECT version, data
FROM {{.schema}}.snapshots
WHERE stream_id = $1::text AND type = $2::text AND schema_version = $3::integer
  AND ($4::bigint = 0 OR version <= $4::bigint)
ORDER BY version DESC
LIMIT 1
