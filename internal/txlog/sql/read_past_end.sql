-- read_past_end: after a read that was not full, what lies past its end.
-- $1 tx_id and $2 position of the end.
-- Returns the snapshot's xmin (the horizon) and xmax (one past the newest
-- completed transaction), and whether a committed row exists after the end:
-- one held behind the horizon, or one committed since the read. The probe
-- is ordered by the index so that it is an index scan that stops at the
-- first visible row; it steps over rows of transactions still open.
SELECT pg_snapshot_xmin(pg_current_snapshot()),
       pg_snapshot_xmax(pg_current_snapshot()),
       (SELECT l.tx_id
        FROM {{.table}} l
        WHERE (l.tx_id, l.position) > ($1::xid8, $2::bigint)
        ORDER BY l.tx_id, l.position
        LIMIT 1) IS NOT NULL
