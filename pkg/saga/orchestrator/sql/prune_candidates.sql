-- prune_candidates: at most $2 finished sagas whose last update is more than
-- $1 microseconds old by the database's clock, oldest first, row-locked,
-- skipping rows another transaction holds (a writer of the saga, another
-- replica's pruner), so that pruners never wait and never take the same
-- sagas. Running and compensating sagas are never candidates. Oldest first
-- lets the index on updated_at (migration 014) read about $2 entries from
-- its old end rather than every finished saga.
SELECT id
FROM {{.schema}}.saga_instances
WHERE status IN ('completed', 'compensated', 'failed')
  AND updated_at < now() - $1::bigint * interval '1 microsecond'
ORDER BY updated_at
LIMIT $2
FOR UPDATE SKIP LOCKED
