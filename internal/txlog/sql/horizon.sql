-- horizon: the horizon every log reader of the cluster reads up to now, and,
-- for each watched log, whether committed rows wait behind it.
-- Returns the xmin of this statement's snapshot (the id of the oldest
-- transaction still running, or the next id if none runs) and one boolean
-- per watched log, in the order of the watched logs (each the sub-select of
-- horizon_waiting.sql).
-- One statement, so that every answer comes from the same snapshot: a
-- committed row at or past the xmin is one that no reader can read until the
-- transaction at the xmin ends (and proves that one still runs: with none
-- running, the xmin lies past every committed transaction).
WITH h AS MATERIALIZED (
    SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin
)
SELECT h.xmin, ARRAY[{{.waiting}}]::bool[]
FROM h
