-- load: the batch's existing sagas ($1 ids). Read without row locks, which
-- would give the transaction its id before the outbox key locks are taken:
-- the sagas' advisory locks (lock.sql), held since, keep every other writer
-- of their state out until the transaction ends.
SELECT id, state, trace_parent, trace_state
FROM {{.schema}}.saga_instances
WHERE id = ANY ($1::text[])
ORDER BY id
