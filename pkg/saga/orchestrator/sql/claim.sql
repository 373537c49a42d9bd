-- claim: takes at most $1 sagas that are due, skipping those another
-- transaction holds, and moves their due_at $2 microseconds ahead: the
-- claim. The claimer then ticks each one through the normal transition path,
-- which writes the saga's real next due time. A claimer that dies before
-- that leaves the claim to expire, and the saga is claimed again.
UPDATE {{.schema}}.saga_instances AS s
SET due_at = now() + $2::bigint * interval '1 microsecond'
WHERE s.id IN (
    SELECT id
    FROM {{.schema}}.saga_instances
    WHERE due_at <= now()
    ORDER BY due_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
RETURNING s.id
