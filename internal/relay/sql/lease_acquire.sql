-- lease_acquire: takes the lease $1 for holder $2 for $3 (an interval) if no
-- one holds it or its holder's time ran out, and returns the new token. A
-- takeover increases the token, which fences every checkpoint of the
-- previous holder. No row is returned while another holder's lease lasts
-- (or our own: a restarted replica waits like any other). The database
-- clock alone decides.
INSERT INTO {{.schema}}.relay_leases AS l (name, holder, token, expires_at, acquired_at)
VALUES ($1, $2, 1, now() + $3::interval, now())
ON CONFLICT (name) DO UPDATE
SET holder = EXCLUDED.holder, token = l.token + 1, expires_at = EXCLUDED.expires_at, acquired_at = now()
WHERE l.expires_at <= now()
RETURNING token
