-- prune: deletes the sagas prune_candidates locked ($1 ids; $2 their
-- advisory lock keys, in the same order), each only if its advisory lock is
-- free: a batch holding it may have loaded the saga (without a row lock) and
-- would write it back, and one that takes it later finds the saga gone. The
-- try never waits. The saga's timeline goes with it in this statement
-- (saga_history's foreign key cascades on delete).
DELETE FROM {{.schema}}.saga_instances AS s
USING unnest($1::text[], $2::bigint[]) AS c(id, k)
WHERE s.id = c.id
  AND s.status IN ('completed', 'compensated', 'failed')
  AND pg_try_advisory_xact_lock(c.k)
