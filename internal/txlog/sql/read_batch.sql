-- read_batch: the next rows of a log after a position, in (tx_id, position)
-- order, that no transaction still running can precede.
-- $1 tx_id and $2 position read after, $3 the most rows to return.
--
-- The horizon is the xmin of this statement's snapshot: every transaction
-- with a lower id has ended, so no row with a lower tx_id can still appear,
-- and every committed one is visible. Rows at or beyond it wait until the
-- transactions before them end: a late commit is never skipped.
--
-- Both bounds are index conditions on (tx_id, position) and the order is the
-- index's, so this is one index range scan, stopped by the LIMIT. Each row
-- repeats the horizon (an init plan, computed once).
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon_xmin
)
SELECT (SELECT horizon_xmin FROM h), l.tx_id, l.position{{.columns}}
FROM {{.table}} l
WHERE (l.tx_id, l.position) > ($1::xid8, $2::bigint)
  AND l.tx_id < (SELECT horizon_xmin FROM h)
ORDER BY l.tx_id, l.position
LIMIT $3
