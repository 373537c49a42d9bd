-- sweep: deletes at most $1 expired rows, of every consumer.
-- The row ids are collected first (ctid = ANY (ARRAY(...)) makes a TID scan)
-- and locked with SKIP LOCKED, so sweepers of several replicas, and rows a
-- concurrent transaction is touching, never make this statement wait.
DELETE FROM {{.schema}}.inbox
WHERE ctid = ANY (ARRAY(
    SELECT ctid
    FROM {{.schema}}.inbox
    WHERE expires_at < now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
