-- save: inserts new sagas and updates changed ones ($1: a jsonb array of
-- rows), in one statement.
INSERT INTO {{.schema}}.saga_instances AS s (
    id, definition, definition_version, status, step, attempt, correlation_id,
    state, reason, due_at, trace_parent, trace_state, started_at, updated_at)
SELECT id, definition, definition_version, status, step, attempt, correlation_id,
       state, reason, due_at, trace_parent, trace_state, started_at, updated_at
FROM jsonb_to_recordset($1::jsonb) AS x(
    id text, definition text, definition_version integer, status text, step text,
    attempt integer, correlation_id text, state jsonb, reason text, due_at timestamptz,
    trace_parent text, trace_state text, started_at timestamptz, updated_at timestamptz)
ON CONFLICT (id) DO UPDATE SET
    status       = excluded.status,
    step         = excluded.step,
    attempt      = excluded.attempt,
    state        = excluded.state,
    reason       = excluded.reason,
    due_at       = excluded.due_at,
    trace_parent = coalesce(excluded.trace_parent, s.trace_parent),
    trace_state  = coalesce(excluded.trace_state, s.trace_state),
    updated_at   = excluded.updated_at,
    revision     = s.revision + 1
