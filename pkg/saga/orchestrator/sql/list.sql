-- list: sagas, newest first, filtered by status ($1, NULL = any) and
-- definition ($2, NULL = any), at most $3, updated before $4 (paging).
SELECT id, definition, definition_version, status, step, attempt, reason, due_at, started_at, updated_at
FROM {{.schema}}.saga_instances
WHERE ($1::text IS NULL OR status = $1)
  AND ($2::text IS NULL OR definition = $2)
  AND updated_at < $4
ORDER BY updated_at DESC, id
LIMIT $3
