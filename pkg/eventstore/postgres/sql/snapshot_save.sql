-- snapshot_save: stores a snapshot of stream $1 at version $2 (type $3,
-- schema version $4, data $5), replacing one at the same version: the state
-- at a version is the same for every writer of the same type and schema
-- version, and a replaced one of another type only costs its reader a replay.
INSERT INTO {{.schema}}.snapshots AS s (stream_id, version, type, schema_version, data)
VALUES ($1::text, $2::bigint, $3::text, $4::integer, $5::jsonb)
ON CONFLICT (stream_id, version) DO UPDATE
SET type = EXCLUDED.type, schema_version = EXCLUDED.schema_version,
    data = EXCLUDED.data, created_at = now()
