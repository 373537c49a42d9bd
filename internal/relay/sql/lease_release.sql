-- lease_release: ends the lease $1 held by holder $2 with token $3 now, so
-- that a standby takes over at once.
UPDATE {{.schema}}.relay_leases
SET expires_at = now()
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()
