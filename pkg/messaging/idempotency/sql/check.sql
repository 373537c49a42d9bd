-- check: second statement of the request's transaction, once it holds the
-- key's lock (lock.sql): is the claim still the caller's? A claim whose token
-- changed was taken over. A separate statement, so that at READ COMMITTED it
-- sees what a takeover that held the lock before committed. Reads only: the
-- transaction still has no id. $1 scope, $2 key, $3 token.
SELECT true
FROM {{.schema}}.idempotency_keys
WHERE scope = $1 AND key = $2 AND xmin = $3 AND state = 'running'
