-- prune: deletes at most $3 barrier rows of participant $1 created more than
-- $2 microseconds ago. The row ids are collected first and locked with SKIP
-- LOCKED, so the statement never waits for a transaction handling a command.
DELETE FROM {{.schema}}.saga_barrier
WHERE ctid = ANY (ARRAY(
    SELECT ctid
    FROM {{.schema}}.saga_barrier
    WHERE participant = $1 AND created_at < now() - $2::bigint * interval '1 microsecond'
    LIMIT $3
    FOR UPDATE SKIP LOCKED
))
