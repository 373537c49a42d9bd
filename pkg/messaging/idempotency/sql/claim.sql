-- claim: takes a key that has no row yet, in a transaction of its own, so
-- that concurrent requests with the key see it held. $1 scope, $2 key,
-- $3 request fingerprint, $4 TTL in microseconds.
-- Returns the row's xmin, the claim's token: it changes whenever the row is
-- taken over or completed. No row: the key has one already (see lookup.sql).
INSERT INTO {{.schema}}.idempotency_keys (scope, key, request_fingerprint, state, expires_at)
VALUES ($1, $2, $3, 'running', now() + $4::bigint * interval '1 microsecond')
ON CONFLICT (scope, key) DO NOTHING
RETURNING xmin
