-- release: gives up a claim whose request committed nothing, so that a retry
-- runs at once. Only the caller's own claim, and only while running: a
-- claim taken over or completed in the meantime stays. $1 scope, $2 key,
-- $3 token.
DELETE FROM {{.schema}}.idempotency_keys
WHERE scope = $1 AND key = $2 AND xmin = $3 AND state = 'running'
