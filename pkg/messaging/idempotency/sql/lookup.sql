-- lookup: reads the row of a key that claim.sql found taken, without
-- waiting for locks. $1 scope, $2 key, $3 running timeout in microseconds.
-- expired: past expires_at, treated as absent. stale: running and claimed
-- longer than the running timeout ago, so its owner may be dead.
SELECT request_fingerprint,
       state,
       response_status,
       response_headers,
       response_body,
       expires_at <= now() AS expired,
       state = 'running' AND created_at <= now() - $3::bigint * interval '1 microsecond' AS stale
FROM {{.schema}}.idempotency_keys
WHERE scope = $1 AND key = $2
