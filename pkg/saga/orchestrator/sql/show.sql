-- show: one saga with its state.
SELECT id, definition, definition_version, status, step, attempt, correlation_id, state, reason, due_at, revision, started_at, updated_at
FROM {{.schema}}.saga_instances
WHERE id = $1
