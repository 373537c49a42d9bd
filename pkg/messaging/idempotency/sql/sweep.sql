-- sweep: deletes at most $1 expired keys of every scope. Row ids are
-- collected first (ctid = ANY (ARRAY(...)) makes a TID scan) and locked with
-- SKIP LOCKED, so a request holding its row and concurrent sweepers never
-- make this statement wait.
DELETE FROM {{.schema}}.idempotency_keys
WHERE ctid = ANY (ARRAY(
    SELECT ctid
    FROM {{.schema}}.idempotency_keys
    WHERE expires_at < now()
    LIMIT $1
    FOR UPDATE SKIP LOCKED
))
