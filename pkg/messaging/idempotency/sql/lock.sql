-- lock: first statement of the request's transaction. Locks the claimed row
-- until the transaction ends, so that no takeover can happen while the
-- request runs, and checks that the claim is still the caller's: a claim
-- whose token changed was taken over. $1 scope, $2 key, $3 token.
SELECT true
FROM {{.schema}}.idempotency_keys
WHERE scope = $1 AND key = $2 AND xmin = $3 AND state = 'running'
FOR UPDATE
