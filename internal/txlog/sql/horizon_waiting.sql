-- horizon_waiting: whether a committed row of the log has a tx_id at or past
-- the horizon h.xmin. Part of horizon.sql. Ordered by the index so that it is
-- an index probe that stops at the first visible row; it steps over rows of
-- transactions still open.
(SELECT true
 FROM {{.table}} l
 WHERE l.tx_id >= h.xmin
 ORDER BY l.tx_id, l.position
 LIMIT 1) IS NOT NULL
