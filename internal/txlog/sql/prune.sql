-- prune: deletes at most $2 rows of the log that every registered reader of
-- log $1 has passed: rows at or before the lowest checkpoint. With no
-- checkpoint the bound is NULL and nothing is deleted.
-- The bound is two scalar sub-selects, so the row comparison is an index
-- range on (tx_id, position). Rows are collected by ctid and locked with
-- SKIP LOCKED: pruners of several replicas never wait on each other.
WITH m AS MATERIALIZED (
    SELECT c.tx_id, c.position
    FROM {{.schema}}.txlog_checkpoints c
    WHERE c.log_name = $1
    ORDER BY c.tx_id, c.position
    LIMIT 1
)
DELETE FROM {{.table}}
WHERE ctid = ANY (ARRAY(
    SELECT l.ctid
    FROM {{.table}} l
    WHERE (l.tx_id, l.position) <= ((SELECT tx_id FROM m), (SELECT position FROM m))
    ORDER BY l.tx_id, l.position
    LIMIT $2
    FOR UPDATE SKIP LOCKED
))
