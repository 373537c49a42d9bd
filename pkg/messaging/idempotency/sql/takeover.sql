-- takeover: claims a key whose row is expired, or running past the running
-- timeout with the same fingerprint and held by no transaction (its owner
-- died before its work committed). The row becomes a fresh claim: created_at
-- is the time of this claim. $1 scope, $2 key, $3 request fingerprint,
-- $4 TTL and $5 running timeout, in microseconds, $6 the seed of lock.sql,
-- $7 the table's schema.
-- A key whose advisory lock a live request holds (lock.sql) is not taken,
-- nor a row locked by one storing its response (SKIP LOCKED): this
-- statement never waits. Returns the new token, or no row.
UPDATE {{.schema}}.idempotency_keys
SET request_fingerprint = $3,
    state = 'running',
    response_status = NULL,
    response_headers = NULL,
    response_body = NULL,
    created_at = now(),
    expires_at = now() + $4::bigint * interval '1 microsecond'
WHERE ctid = (
    SELECT ctid
    FROM {{.schema}}.idempotency_keys
    WHERE scope = $1 AND key = $2
      AND (expires_at <= now()
           OR (state = 'running'
               AND request_fingerprint = $3
               AND created_at <= now() - $5::bigint * interval '1 microsecond'))
      AND pg_try_advisory_xact_lock(hashtextextended($7::text || chr(31) || $1::text || chr(31) || $2::text, $6::bigint))
    FOR UPDATE SKIP LOCKED
)
RETURNING xmin
