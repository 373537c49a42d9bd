-- lease_renew: extends the lease $1 held by holder $2 with token $3 by $4
-- (an interval) from now. No row is affected if the lease was taken over
-- or ran out: a holder that lost its lease must acquire it anew, with a new
-- token.
UPDATE {{.schema}}.relay_leases
SET expires_at = now() + $4::interval
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()
