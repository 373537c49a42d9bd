-- lease_fence: locks the lease $1 if holder $2 still holds it with token $3
-- and it has not run out; returns no row otherwise. Run in the transaction
-- that saves the checkpoint: the lock keeps a takeover from committing
-- between this check and that commit.
SELECT 1
FROM {{.schema}}.relay_leases
WHERE name = $1 AND holder = $2 AND token = $3 AND expires_at > now()
FOR UPDATE
